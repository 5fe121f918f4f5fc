//! Properties of the stop's pure parts: the plan (parse, dedupe, batches)
//! and the merge of batch outcomes (one entry per distinct id, in order,
//! never a job that CPH did not issue for the phone).

use std::collections::{HashMap, HashSet};

use cph_gateway::domain::{Code, JobId};
use cph_gateway::stop::fanout::answers;
use cph_gateway::stop::merge::merge;
use cph_gateway::stop::outcome::BatchOutcome;
use cph_gateway::stop::plan::Plan;
use cph_gateway::upstream::cph::UpstreamJob;
use proptest::prelude::*;
use proptest::sample::select;

use crate::helpers::distinct;

/// A small alphabet of valid ids, so that duplicates are frequent.
const ALPHABET: &[&str] = &[
    "a",
    "b",
    "c",
    "d",
    "e",
    "phone-1",
    "phone-2",
    "P_3",
    "0a1b2c3d000000000000000000000001",
    "0a1b2c3d000000000000000000000002",
    "x-y_z",
    "ZZ",
    "1234567890123456789012345678901234567890123456789012345678901234",
];

/// Ids that never appear in a request.
const FOREIGN: &[&str] = &["foreign-1", "foreign-2", "zz-not-asked"];

const UPSTREAM_CODES: &[&str] = &[
    "CPHGW.0301",
    "CPHGW.0302",
    "CPHGW.0303",
    "CPS.0003",
    "CPS.0001",
    "APIG.0503",
    "APIG.0308",
];

/// What an upstream batch came to, in a form proptest can clone and print.
#[derive(Debug, Clone)]
enum Spec {
    Jobs(Vec<UpstreamJob>),
    Failed {
        error_code: String,
        error_msg: String,
        definite: bool,
        kind: Code,
    },
}

impl Spec {
    fn outcome(&self) -> BatchOutcome {
        match self {
            Spec::Jobs(jobs) => BatchOutcome::Jobs(answers(jobs.clone())),
            Spec::Failed {
                error_code,
                error_msg,
                definite,
                kind,
            } => BatchOutcome::rejected(error_code.clone(), error_msg.clone(), *definite, *kind),
        }
    }
}

/// How the upstream answers for one id of the batch.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Missing,
    Job(u32),
    Error(usize),
    /// An entry with neither a job nor an error.
    Empty,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        1 => Just(Answer::Missing),
        4 => any::<u32>().prop_map(Answer::Job),
        2 => (0..UPSTREAM_CODES.len()).prop_map(Answer::Error),
        1 => Just(Answer::Empty),
    ]
}

fn entry(id: &str, answer: Answer) -> Option<UpstreamJob> {
    let mut e = UpstreamJob {
        phone_id: id.into(),
        job_id: None,
        error_code: None,
        error_msg: None,
    };
    match answer {
        Answer::Missing => return None,
        Answer::Job(n) => e.job_id = Some(format!("job-{id}-{n}").into()),
        Answer::Error(i) => {
            e.error_code = Some(UPSTREAM_CODES[i].into());
            e.error_msg = Some(format!("upstream says no to {id}").into());
        }
        Answer::Empty => {}
    }
    Some(e)
}

/// One batch's outcome: a shuffled answer with some entries missing, some
/// foreign ones added, some errors; or the whole batch failed.
fn spec(batch: Vec<String>) -> impl Strategy<Value = Spec> {
    let n = batch.len();
    let in_batch: HashSet<String> = batch.iter().cloned().collect();
    let others: Vec<&'static str> = ALPHABET.iter().chain(FOREIGN).copied().collect();
    let jobs = (
        proptest::collection::vec(answer(), n),
        proptest::collection::vec((select(others), answer()), 0..4),
    )
        .prop_map(move |(answers, extra)| {
            let mut jobs: Vec<UpstreamJob> = batch
                .iter()
                .zip(answers)
                .filter_map(|(id, a)| entry(id, a))
                .collect();
            let mut extra_seen = HashSet::new();
            jobs.extend(
                extra
                    .into_iter()
                    .filter(|(id, _)| !in_batch.contains(*id) && extra_seen.insert(*id))
                    .filter_map(|(id, a)| entry(id, a)),
            );
            jobs
        })
        .prop_shuffle()
        .prop_map(Spec::Jobs);
    let failed = (
        select(UPSTREAM_CODES),
        any::<bool>(),
        select(vec![
            Code::UpstreamFailed,
            Code::UpstreamTimeout,
            Code::IamUnavailable,
        ]),
    )
        .prop_map(|(code, definite, kind)| Spec::Failed {
            error_code: code.to_owned(),
            error_msg: format!("batch failed with {code}"),
            definite,
            kind,
        });
    prop_oneof![3 => jobs, 2 => failed]
}

#[derive(Debug, Clone)]
struct Case {
    ids: Vec<String>,
    batch_size: usize,
    specs: Vec<Spec>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(select(ALPHABET), 1..300),
        1usize..50,
    )
        .prop_flat_map(|(ids, batch_size)| {
            let ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
            let plan = Plan::new(shared(&ids), batch_size).expect("valid ids");
            let specs: Vec<_> = plan
                .batches()
                .map(|b| spec(b.iter().map(|s| s.to_string()).collect()))
                .collect();
            (Just(ids), Just(batch_size), specs)
        })
        .prop_map(|(ids, batch_size, specs)| Case {
            ids,
            batch_size,
            specs,
        })
}

fn shared(ids: &[String]) -> Vec<std::sync::Arc<str>> {
    ids.iter().map(|s| s.as_str().into()).collect()
}

fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plan_dedupes_and_batches(ids in proptest::collection::vec(select(ALPHABET), 1..300),
                                batch_size in 1usize..50) {
        let ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
        let plan = Plan::new(shared(&ids), batch_size).unwrap();
        let want = distinct(&ids);
        let got: Vec<String> = plan.ids().iter().map(|s| s.to_string()).collect();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(plan.batch_count(), want.len().div_ceil(batch_size));
        let mut joined = Vec::new();
        for (i, b) in plan.batches().enumerate() {
            prop_assert!(!b.is_empty() && b.len() <= batch_size);
            prop_assert_eq!(b, plan.batch(i));
            joined.extend(b.iter().map(|s| s.to_string()));
        }
        prop_assert_eq!(joined, want);
    }

    #[test]
    fn merge_accounts_for_every_id(case in case()) {
        let plan = Plan::new(shared(&case.ids), case.batch_size).unwrap();
        let outcomes: Vec<BatchOutcome> = case.specs.iter().map(Spec::outcome).collect();
        prop_assert_eq!(outcomes.len(), plan.batch_count());
        let merged = merge(&plan, &outcomes);

        // Exactly one entry per distinct id, in first-appearance order.
        let want = distinct(&case.ids);
        let got: Vec<&str> = merged.jobs.iter().map(|e| e.phone_id.as_str()).collect();
        prop_assert_eq!(got, want);

        let mut entries = merged.jobs.iter();
        for (batch, spec) in plan.batches().zip(&case.specs) {
            for id in batch {
                let e = entries.next().expect("an entry per planned id");
                prop_assert_eq!(e.phone_id.as_str(), &**id);
                // Either a job or an error, never neither.
                prop_assert!(e.job_id.is_some() || e.error_code.is_some(), "{:?}", e);
                if e.error_code.is_some() {
                    prop_assert!(e.error_msg.is_some(), "{:?}", e);
                }
                match spec {
                    Spec::Jobs(upstream) => {
                        let mine = upstream.iter().find(|j| *j.phone_id == **id);
                        match mine {
                            Some(j) if j.job_id.is_some() => {
                                prop_assert_eq!(e.job_id.map(JobId::as_str), j.job_id.as_deref());
                                prop_assert_eq!(e.error_code, None);
                            }
                            Some(j) if j.error_code.is_some() => {
                                prop_assert_eq!(e.job_id, None);
                                prop_assert_eq!(e.error_code, j.error_code.as_deref());
                                prop_assert_eq!(e.error_msg, j.error_msg.as_deref());
                            }
                            // No usable answer for this id: the outcome is
                            // unknown, a gateway upstream-failure code.
                            _ => {
                                prop_assert_eq!(e.job_id, None);
                                prop_assert_eq!(e.error_code, Some(Code::UpstreamFailed.as_str()));
                            }
                        }
                    }
                    Spec::Failed { error_code, error_msg, .. } => {
                        prop_assert_eq!(e.job_id, None);
                        prop_assert_eq!(e.error_code, Some(error_code.as_str()));
                        prop_assert_eq!(e.error_msg, Some(error_msg.as_str()));
                    }
                }
            }
        }
        prop_assert!(entries.next().is_none());

        // No job id is ever attributed to a phone it was not issued for.
        let issued: HashMap<&str, &str> = case
            .specs
            .iter()
            .filter_map(|s| match s {
                Spec::Jobs(j) => Some(j),
                Spec::Failed { .. } => None,
            })
            .flatten()
            .filter_map(|j| Some((j.job_id.as_deref()?, &*j.phone_id)))
            .collect();
        for e in &merged.jobs {
            if let Some(job) = e.job_id {
                prop_assert_eq!(issued.get(job.as_str()).copied(), Some(e.phone_id.as_str()));
            }
        }

        // The request fails as a whole iff no batch got a definite answer.
        let definite = case.specs.iter().any(|s| match s {
            Spec::Jobs(_) => true,
            Spec::Failed { definite, .. } => *definite,
        });
        prop_assert_eq!(merged.failure.is_none(), definite, "{:?}", merged.failure);
        if let Some(code) = merged.failure {
            let kinds: Vec<Code> = case
                .specs
                .iter()
                .filter_map(|s| match s {
                    Spec::Failed { kind, .. } => Some(*kind),
                    Spec::Jobs(_) => None,
                })
                .collect();
            let want = if kinds.contains(&Code::UpstreamTimeout) {
                Code::UpstreamTimeout
            } else if kinds.iter().all(|k| *k == Code::IamUnavailable) {
                Code::IamUnavailable
            } else {
                Code::UpstreamFailed
            };
            prop_assert_eq!(code, want);
            prop_assert!(code.status().is_server_error());
        }
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        max_ids in 1usize..20,
        batch_size in 1usize..10,
    ) {
        check_parse(&body, max_ids, batch_size)?;
    }

    #[test]
    fn parse_never_panics_on_json_like_bodies(
        body in json_like(),
        max_ids in 1usize..20,
        batch_size in 1usize..10,
    ) {
        check_parse(body.as_bytes(), max_ids, batch_size)?;
    }

    #[test]
    fn parse_of_a_well_formed_body(
        ids in proptest::collection::vec(select(ALPHABET), 1..40),
        max_ids in 1usize..40,
        batch_size in 1usize..10,
    ) {
        let body = serde_json::json!({ "other": [1, {"phone_ids": 3}], "phone_ids": ids }).to_string();
        match Plan::parse(body.as_bytes(), max_ids, batch_size) {
            Ok(plan) => {
                prop_assert!(ids.len() <= max_ids);
                let got: Vec<&str> = plan.ids().iter().map(|s| &**s).collect();
                let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
                prop_assert_eq!(got, distinct(&ids));
            }
            Err(e) => {
                prop_assert!(ids.len() > max_ids, "{:?}", e);
                prop_assert_eq!(e.code, Code::TooLarge);
            }
        }
    }
}

/// `Plan::parse` answers Ok with valid distinct ids, or one of the three
/// body error codes.
fn check_parse(body: &[u8], max_ids: usize, batch_size: usize) -> Result<(), TestCaseError> {
    match Plan::parse(body, max_ids, batch_size) {
        Ok(plan) => {
            let ids = plan.ids();
            prop_assert!(!ids.is_empty() && ids.len() <= max_ids);
            prop_assert!(ids.iter().all(|id| is_id(id)), "{:?}", ids);
            let set: HashSet<&str> = ids.iter().map(|s| &**s).collect();
            prop_assert_eq!(set.len(), ids.len());
            prop_assert_eq!(plan.batches().map(<[_]>::len).sum::<usize>(), ids.len());
        }
        Err(e) => {
            prop_assert!(
                matches!(e.code, Code::InvalidBody | Code::InvalidId | Code::TooLarge),
                "{:?}",
                e
            );
            prop_assert_eq!(e.code.status().as_u16() / 100, 4);
            prop_assert!(!e.msg.is_empty());
        }
    }
    Ok(())
}

/// Bodies near the expected shape: `{"phone_ids": [...]}` with odd strings,
/// numbers, nulls, nesting, duplicate keys and trailing bytes.
fn json_like() -> impl Strategy<Value = String> {
    let element = prop_oneof![
        select(ALPHABET).prop_map(|s| format!("{s:?}")),
        "[A-Za-z0-9_\\- /é\\\\\"]{0,70}".prop_map(|s| serde_json::Value::from(s).to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("null".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        Just("\"\\ud800\"".to_owned()),
    ];
    let list = proptest::collection::vec(element, 0..30).prop_map(|v| format!("[{}]", v.join(",")));
    let key = select(vec!["phone_ids", "phone_ids", "phoneIds", "x", ""]);
    let value = prop_oneof![
        3 => list,
        1 => Just("\"abc\"".to_owned()),
        1 => Just("null".to_owned()),
        1 => any::<i32>().prop_map(|n| n.to_string()),
    ];
    let tail = select(vec!["", "", " ", "\n", "x", "}", ",", "[]"]);
    (proptest::collection::vec((key, value), 0..3), tail).prop_map(|(fields, tail)| {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{k:?}:{v}"))
            .collect::<Vec<_>>()
            .join(",");
        format!("{{{body}}}{tail}")
    })
}
