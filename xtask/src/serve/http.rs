//! The HTTP side: hyper's HTTP/1 server on a tokio runtime. Each connection is served by
//! hyper (which answers malformed requests and oversized headers itself); each request's
//! body is read up to the limit (413 beyond it, checked on `Content-Length` before any byte
//! is read), then handed with the request to [`super::api::route`] on tokio's blocking pool
//! under `catch_unwind`: a panicking handler answers 500 and the server goes on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::State;

/// How long a client may take to send its request headers, and then its body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; further ones wait to be accepted.
const MAX_CONNECTIONS: usize = 256;

/// A request as the handlers see it: the body already read.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The query string's `key=value` pairs, percent-decoded.
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A handler's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON document.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    /// `{"error": message, "status": status}`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(
            status,
            &serde_json::json!({ "error": message.into(), "status": status }),
        )
    }

    /// Text of a given content type.
    pub fn text(content_type: &'static str, body: impl Into<String>) -> Self {
        Self {
            status: 200,
            content_type,
            body: body.into().into_bytes(),
        }
    }
}

/// Binds `addr` (port 0: any free port) and returns the listener and its address.
pub fn bind(runtime: &tokio::runtime::Runtime, addr: SocketAddr) -> std::io::Result<TcpListener> {
    runtime.block_on(TcpListener::bind(addr))
}

/// Accepts connections on `listener` for ever.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors and the like: wait, then go on accepting.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&state), req));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

async fn handle(
    state: Arc<State>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let reply = match read(&state, req).await {
        Ok(request) => {
            let state = Arc::clone(&state);
            tokio::task::spawn_blocking(move || {
                catch_unwind(AssertUnwindSafe(|| super::api::route(&state, &request)))
                    .unwrap_or_else(|_| {
                        Reply::error(
                            500,
                            "internal error: the handler panicked (see the server's log)",
                        )
                    })
            })
            .await
            .unwrap_or_else(|_| Reply::error(500, "internal error: the handler did not finish"))
        }
        Err(reply) => reply,
    };
    Ok(response(reply))
}

/// Reads the request's target and body; an error reply when the body is too large, cut
/// short or too slow.
async fn read(state: &State, req: hyper::Request<Incoming>) -> Result<Request, Reply> {
    let (parts, body) = req.into_parts();
    let too_large = || {
        Reply::error(
            413,
            format!(
                "the body is larger than the {} bytes accepted",
                state.max_body
            ),
        )
    };
    if let Some(len) = parts.headers.get(CONTENT_LENGTH) {
        // hyper has already refused a Content-Length that is not a number.
        let len: u64 = len.to_str().ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        if len > state.max_body as u64 {
            return Err(too_large());
        }
    }
    let collected =
        tokio::time::timeout(READ_TIMEOUT, Limited::new(body, state.max_body).collect())
            .await
            .map_err(|_| Reply::error(408, "the body took too long to arrive"))?;
    let body = match collected {
        Ok(c) => c.to_bytes().to_vec(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(Reply::error(
                400,
                format!("the body could not be read: {e}"),
            ));
        }
    };
    Ok(Request {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(parse_query).unwrap_or_default(),
        body,
    })
}

fn response(reply: Reply) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `a=1&b=x%2Fy` → `[("a","1"), ("b","x/y")]`; `+` is a space.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_split_and_decoded() {
        assert_eq!(
            parse_query("model=mnist%2Fqat-w4a4&x=a+b&&flag&bad=%zz%4"),
            [
                ("model".to_string(), "mnist/qat-w4a4".to_string()),
                ("x".into(), "a b".into()),
                ("flag".into(), "".into()),
                ("bad".into(), "%zz%4".into()),
            ]
        );
        assert_eq!(percent_decode("%e2%82%ac%"), "€%");
    }
}
