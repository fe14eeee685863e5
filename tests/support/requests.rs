//! An HTTP client for talking to the relay, and what it answered.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// HTTP client for posting webhooks (HTTP/1.1 keep-alive).
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// What the relay answered to one request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body as JSON, `Null` when it is not JSON.
    pub json: serde_json::Value,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on `client`; an error if the connection failed.
pub async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Result<Answer, String> {
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    answer_of(resp).await
}

/// Reads a response whole into an [`Answer`].
pub async fn answer_of(resp: http::Response<hyper::body::Incoming>) -> Result<Answer, String> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Ok(Answer {
        status,
        headers,
        body,
        json,
    })
}

/// POSTs `body` with `headers` to `url`.
pub async fn post(
    client: &HttpClient,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Answer, String> {
    let mut req = Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(client, req.body(Full::new(body.into())).unwrap()).await
}

/// `method url` without a body; panics if the connection fails.
pub async fn call(method: Method, url: &str) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(&client(), req).await.unwrap()
}

/// GET `url`; panics if the connection fails.
pub async fn get(url: &str) -> Answer {
    call(Method::GET, url).await
}

/// Sends `method url` with an optional JSON body and bearer token; status and JSON answer.
pub async fn json_request(
    method: Method,
    url: &str,
    body: Option<&serde_json::Value>,
    bearer: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let a = send(&client(), req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    (a.status, a.json)
}

/// POSTs each of `bodies` with `headers` to `url` in turn on one keep-alive
/// client, asserting that each is answered 200; the answers.
pub async fn post_ok<B: Into<Bytes>>(
    url: &str,
    headers: &[(&str, &str)],
    bodies: impl IntoIterator<Item = B>,
) -> Vec<Answer> {
    let c = client();
    let mut answers = Vec::new();
    for body in bodies {
        let a = post(&c, url, headers, body).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "POST {url}: {:?}", a.json);
        answers.push(a);
    }
    answers
}
