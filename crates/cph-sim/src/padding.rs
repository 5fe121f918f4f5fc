//! Oversized answers, streamed: a JSON prefix, many filler bytes, a suffix.
//! The simulator never holds the whole body, so answers of hundreds of
//! megabytes cost it nothing but time.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// Size of the filler chunks.
const CHUNK: usize = 64 * 1024;
static FILLER: [u8; CHUNK] = [b'x'; CHUNK];

/// A body of `prefix`, `fill` filler bytes (`x`), then `suffix`.
struct Padded {
    prefix: Option<Bytes>,
    fill: u64,
    suffix: Option<Bytes>,
    /// Whether the exact length is announced (`Content-Length`).
    sized: bool,
}

impl http_body::Body for Padded {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if this.fill > 0 {
            let n = this.fill.min(CHUNK as u64) as usize;
            this.fill -= n as u64;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..n])))));
        }
        Poll::Ready(this.suffix.take().map(|s| Ok(Frame::data(s))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.fill == 0 && self.suffix.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len() as u64);
        let total = len(&self.prefix) + self.fill + len(&self.suffix);
        if self.sized {
            SizeHint::with_exact(total)
        } else {
            let mut hint = SizeHint::new();
            hint.set_lower(total);
            hint
        }
    }
}

/// A JSON answer whose body is `prefix`, then filler up to `min_len` bytes
/// in all, then `suffix`. `chunked`: no `Content-Length`.
pub(crate) fn padded(
    status: StatusCode,
    prefix: Vec<u8>,
    suffix: &'static [u8],
    min_len: u64,
    chunked: bool,
) -> Response {
    let fixed = (prefix.len() + suffix.len()) as u64;
    let body = Padded {
        prefix: Some(Bytes::from(prefix)),
        fill: min_len.saturating_sub(fixed),
        suffix: Some(Bytes::from_static(suffix)),
        sized: !chunked,
    };
    let mut res = Response::new(Body::new(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    res
}

/// A JSON object answer padded with a top-level `"padding"` string so that
/// it is at least `min_len` bytes. `json` must be a serialized object.
pub(crate) fn padded_object(
    status: StatusCode,
    mut json: Vec<u8>,
    min_len: u64,
    chunked: bool,
) -> Response {
    if json.last() == Some(&b'}') {
        json.pop();
    }
    if json.len() > 1 {
        json.push(b',');
    }
    json.extend_from_slice(br#""padding":""#);
    padded(status, json, br#""}"#, min_len, chunked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    async fn collect(res: Response) -> Vec<u8> {
        let mut body = res.into_body();
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            out.extend_from_slice(frame.unwrap().data_ref().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn padded_objects_stay_json() {
        for (json, min) in [(&br#"{"a":1}"#[..], 200_000u64), (b"{}", 10), (b"{}", 0)] {
            let res = padded_object(StatusCode::OK, json.to_vec(), min, false);
            let hint = res.body().size_hint().exact().unwrap();
            let body = collect(res).await;
            assert_eq!(body.len() as u64, hint);
            assert!(body.len() as u64 >= min);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["padding"].is_string());
        }
        let res = padded_object(StatusCode::OK, b"{}".to_vec(), 100, true);
        assert_eq!(res.body().size_hint().exact(), None);
    }
}
