//! The two ways a batch-stop is sent: on the direct client (hyper, a
//! prepared target) or, when a proxy may apply, on the pooled reqwest
//! client. Both read the answer within the same limits and come to the
//! same outcomes.

use super::{CallOutcome, CphClient, stop_outcome, transport_outcome};
use crate::domain::PhoneId;
use crate::tenants::Project;
use crate::upstream::credentials::Authorization;
use crate::upstream::direct::{self, CallError, DirectClient, Target};
use crate::upstream::http::{BodyError, read_limited, retry_after};

/// One batch-stop call: where, for whom, with which ids.
pub(super) struct Call<'a> {
    pub url: &'a reqwest::Url,
    pub project: &'a Project,
    pub auth: &'a Authorization,
    pub request_id: &'a str,
    pub ids: &'a [PhoneId],
}

impl CphClient {
    /// The answer's size limit: a batch's jobs take room in proportion to
    /// its phones; an error answer is one message (cut to 512 characters
    /// once read), so only the general limit applies to it.
    fn answer_limit(&self, success: bool, ids: usize) -> usize {
        if success {
            self.stop_answer_limit(ids)
        } else {
            self.max_response_bytes
        }
    }

    /// The call on the direct client, within `upstream.timeout` in all
    /// (connecting, sending, reading the answer).
    pub(super) async fn stop_direct(
        &self,
        client: &DirectClient,
        target: &Target,
        call: Call<'_>,
        body: Vec<u8>,
    ) -> CallOutcome {
        let mut url = call.url.clone();
        let headers = CphClient::call_headers(
            &reqwest::Method::POST,
            &mut url,
            call.project,
            call.auth,
            call.request_id,
            Some(&body),
        );
        let headers = match headers {
            Ok(h) => h,
            Err(e) => return CallOutcome::NotSent(e),
        };
        // A signature may come with a canonical query to send.
        let signed;
        let target = if url.query().is_some() {
            signed = match client.target(&url) {
                Ok(t) => t,
                Err(e) => return CallOutcome::NotSent(e),
            };
            &signed
        } else {
            target
        };
        let exchange = async {
            let (resp, lease) = client.post_json(target, headers, body).await?;
            let limit = self.answer_limit(resp.status().is_success(), call.ids.len());
            direct::read_body(resp, lease, limit).await
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => CallOutcome::Timeout,
            Ok(Err(CallError::NotSent(msg))) => CallOutcome::NotSent(msg),
            Ok(Err(CallError::Broken(msg))) => CallOutcome::Broken(msg),
            Ok(Err(CallError::TooLarge { limit })) => {
                CallOutcome::Broken(BodyError::TooLarge { limit }.to_string())
            }
            Ok(Ok((status, headers, bytes))) => {
                stop_outcome(status, &bytes, retry_after(&headers), call.ids)
            }
        }
    }

    /// The call on the pooled reqwest client (proxy rules and all).
    pub(super) async fn stop_pooled(&self, call: Call<'_>, body: Vec<u8>) -> CallOutcome {
        let request = self.request(
            reqwest::Method::POST,
            call.url.clone(),
            call.project,
            call.auth,
            call.request_id,
            Some(body),
        );
        let request = match request {
            Ok(r) => r,
            Err(e) => return CallOutcome::NotSent(e),
        };
        match request.send().await {
            Err(e) => transport_outcome(&e),
            Ok(resp) => {
                let status = resp.status();
                let headers_retry_after = retry_after(resp.headers());
                let limit = self.answer_limit(status.is_success(), call.ids.len());
                match read_limited(resp, limit).await {
                    Err(BodyError::Transport(e)) => transport_outcome(&e),
                    Err(e @ BodyError::TooLarge { .. }) => CallOutcome::Broken(e.to_string()),
                    Ok(bytes) => stop_outcome(status, &bytes, headers_retry_after, call.ids),
                }
            }
        }
    }
}
