//! A client of the admin API, for the command line.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Sends `method path` with `body` (JSON) to the admin API at `base`
/// (`http://host:port`) with `token`; returns the status and the JSON answer.
pub async fn request(
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let uri: http::Uri = format!("{}{path}", base.trim_end_matches('/')).parse()?;
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("{base} has no host:port"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the admin API at {base}: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(uri.path())
        .header(http::header::HOST, authority.as_str())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::json!({ "text": String::from_utf8_lossy(&bytes) }));
    Ok((status, json))
}
