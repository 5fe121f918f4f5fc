//! Fuzzes the batch-stop body parser: `Plan::parse(data, 10_000, 100)`.
//!
//! Beyond "never panics", it checks what a `Plan` promises: 1..=10,000
//! distinct valid ids, batches of at most 100 that cover the ids in order,
//! and a plan that survives being written back as `{"phone_ids": [..]}`;
//! and that a refusal is one of the body codes with a bounded message.

#![no_main]

use std::collections::HashSet;

use cph_gateway::domain::{Code, is_valid_id};
use cph_gateway::stop::plan::Plan;
use libfuzzer_sys::fuzz_target;

const MAX_IDS: usize = 10_000;
const BATCH: usize = 100;

fuzz_target!(|data: &[u8]| {
    match Plan::parse(data, MAX_IDS, BATCH) {
        Ok(plan) => {
            let ids = plan.ids();
            assert!(!ids.is_empty() && ids.len() <= MAX_IDS, "{} ids", ids.len());
            let mut seen = HashSet::new();
            for id in ids {
                assert!(is_valid_id(id), "invalid id accepted: {id:?}");
                assert!(seen.insert(id), "duplicate id in a plan: {id:?}");
            }
            assert_eq!(plan.batch_count(), ids.len().div_ceil(BATCH));
            let mut covered = 0;
            for (i, batch) in plan.batches().enumerate() {
                assert!(!batch.is_empty() && batch.len() <= BATCH);
                assert_eq!(plan.batch(i), batch);
                assert_eq!(&ids[covered..covered + batch.len()], batch);
                covered += batch.len();
            }
            assert_eq!(covered, ids.len());
            let body = serde_json::to_vec(&serde_json::json!({ "phone_ids": ids }))
                .expect("ids serialize");
            let again = Plan::parse(&body, MAX_IDS, BATCH).expect("a plan's own body parses");
            assert_eq!(again.ids(), ids);
        }
        Err(e) => {
            assert!(
                matches!(e.code, Code::InvalidBody | Code::InvalidId | Code::TooLarge),
                "unexpected code {:?}",
                e.code
            );
            assert!(!e.msg.is_empty());
        }
    }
});
