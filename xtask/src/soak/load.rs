//! The load: every user's requests, and the memory readings taken meanwhile.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{
    backend::Group,
    memory::{memory, GcProbe, Sample, SAMPLE_EVERY},
    Settings, ALIASES, PROMPT_WORDS,
};

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long before the end the second full-GC reading is taken (still under load, as the first).
const GC_BEFORE_END: Duration = Duration::from_secs(15);
/// The least load left after the second full-GC reading starts: the GC and the reading 2 s
/// after it must end before the load does.
const GC_ROOM: Duration = Duration::from_secs(5);

/// When, from the start, the second full-GC reading is taken: [`GC_BEFORE_END`] before the end,
/// or, in a run too short for that, halfway from the first reading (at `warm_up`) to the end;
/// `None` when not even that leaves [`GC_ROOM`].
pub fn second_gc_at(warm_up: Duration, run_for: Duration) -> Option<Duration> {
    let late = run_for.saturating_sub(GC_BEFORE_END);
    if late > warm_up {
        return Some(late);
    }
    let halfway = warm_up + run_for.saturating_sub(warm_up) / 2;
    (run_for.saturating_sub(halfway) >= GC_ROOM).then_some(halfway)
}

/// One request's outcome, kept for the figures.
pub struct Done {
    pub at: Duration,
    pub latency: Duration,
}

/// What a run saw: every request served, the errors, the memory readings.
pub struct Run {
    pub elapsed: Duration,
    pub warm_up: Duration,
    pub done: Vec<Done>,
    pub errors: u64,
    pub samples: Vec<Sample>,
    /// Readings 2 s after a full GC: after the warm-up and shortly before the end (`None`
    /// when the isolate's inspector did not answer).
    pub gc_start: Option<Sample>,
    pub gc_end: Option<Sample>,
    /// Whether the run was long enough for the second full-GC reading ([`second_gc_at`]).
    pub gc_end_planned: bool,
}

/// Every user, with its own token, requests in a loop until the run's end, while the
/// Worker's memory is sampled.
pub async fn drive(
    settings: &Settings,
    api_base: &str,
    group: Group,
    gc: Option<GcProbe>,
    tokens: Vec<String>,
) -> Result<Run> {
    let run_for = Duration::from_secs_f64(settings.minutes * 60.0);
    let warm_up = settings.warm_up.min(run_for / 2);
    let first = memory(group);
    if first.runtime.processes == 0 {
        bail!(
            "no workerd runtime found in the Worker's process group {}",
            group.pgid
        );
    }
    println!(
        "\nsoak: {} users streaming for {:.1} min (warm-up {} s), {} content chunks per answer; \
         at rest: Worker runtime {:.1} MB RSS, dev proxy {:.1} MB",
        settings.users,
        settings.minutes,
        warm_up.as_secs(),
        PROMPT_WORDS + 1,
        first.runtime.mb(),
        first.proxy.mb(),
    );

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.users * 2)
        // workerd closes a keep-alive connection idle for 5 s (kj's pipelineTimeout); a client
        // that picks it up just then gets a reset. Real clients meet an edge, not workerd.
        .pool_idle_timeout(Duration::from_secs(2))
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let url = format!("{api_base}/chat/completions");
    let started = Instant::now();
    let deadline = started + run_for;
    let done = Arc::new(Mutex::new(Vec::<Done>::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let first_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop_sampling = Arc::new(AtomicBool::new(false));

    let samples = Arc::new(Mutex::new(vec![first]));
    // Full-GC readings: after the warm-up, and shortly before the end, both under load.
    let second_gc = second_gc_at(warm_up, run_for);
    let gc_readings = gc.map(|probe| {
        let first_at = started + warm_up;
        let second_at = second_gc.map(|at| started + at);
        tokio::spawn(async move {
            tokio::time::sleep_until(first_at.into()).await;
            let a = probe.collect_and_read(group, started).await;
            let Some(second_at) = second_at else {
                return (a, None);
            };
            tokio::time::sleep_until(second_at.into()).await;
            let b = probe.collect_and_read(group, started).await;
            (a, b)
        })
    });
    let sampler = {
        let (samples, stop, done, errors) = (
            samples.clone(),
            stop_sampling.clone(),
            done.clone(),
            errors.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last_print = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let at = started.elapsed();
                let s = Sample {
                    at,
                    ..memory(group)
                };
                lock(&samples).push(s);
                if at >= last_print + Duration::from_secs(60) {
                    last_print = at;
                    println!(
                        "soak: {:>5.0} s  {:>7} requests  {} errors  runtime RSS {:.1} MB  \
                         dev proxy RSS {:.1} MB",
                        at.as_secs_f64(),
                        lock(&done).len(),
                        errors.load(Ordering::Relaxed),
                        s.runtime.mb(),
                        s.proxy.mb()
                    );
                }
            }
        })
    };

    let mut users = Vec::with_capacity(tokens.len());
    let stream = !settings.no_stream;
    for (user, token) in tokens.into_iter().enumerate() {
        let (http, url, done, errors, first_errors) = (
            http.clone(),
            url.clone(),
            done.clone(),
            errors.clone(),
            first_errors.clone(),
        );
        users.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                let alias = ALIASES[(user + n) % ALIASES.len()];
                let nonce = format!("u{user}n{n}z");
                let t0 = Instant::now();
                let streamed = stream.then_some(n.is_multiple_of(2));
                match request_once(&http, &url, &token, alias, &nonce, streamed).await {
                    Ok(()) => lock(&done).push(Done {
                        at: started.elapsed(),
                        latency: t0.elapsed(),
                    }),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = lock(&first_errors);
                        if first.len() < 5 {
                            first.push(format!(
                                "at {:.0} s, user {user} request {n} ({alias}): {e:#}",
                                started.elapsed().as_secs_f64()
                            ));
                        }
                    }
                }
                n += 1;
            }
        }));
    }
    // Every request is bounded by REQUEST_TIMEOUT, so the tasks end soon after the deadline.
    for u in users {
        tokio::time::timeout(run_for + REQUEST_TIMEOUT * 2, u)
            .await
            .context("a user task did not end in time")?
            .context("a user task panicked")?;
    }
    let elapsed = started.elapsed();
    // The last reading, as the load ends.
    lock(&samples).push(Sample {
        at: elapsed,
        ..memory(group)
    });
    stop_sampling.store(true, Ordering::Relaxed);
    sampler.abort();
    let (gc_start, gc_end) = match gc_readings {
        Some(task) => task.await.unwrap_or((None, None)),
        None => (None, None),
    };

    let done = std::mem::take(&mut *lock(&done));
    let errors = errors.load(Ordering::Relaxed);
    let samples = lock(&samples).clone();
    for e in lock(&first_errors).iter() {
        eprintln!("soak: error: {e}");
    }
    Ok(Run {
        elapsed,
        warm_up,
        done,
        errors,
        samples,
        gc_start,
        gc_end,
        gc_end_planned: second_gc.is_some(),
    })
}

/// One request read to its end: streamed (`Some(include_usage)`) or not (`None`). An error
/// unless it is a 200 that echoes the nonce and every word and, streamed, ends with
/// `data: [DONE]`.
async fn request_once(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    alias: &str,
    nonce: &str,
    stream: Option<bool>,
) -> Result<()> {
    let mut words = vec![nonce.to_owned()];
    words.extend((1..PROMPT_WORDS).map(|i| format!("word{i}")));
    let mut body = json!({
        "model": alias,
        "stream": stream.is_some(),
        "messages": [
            {"role": "system", "content": "You are a patient writing collaborator."},
            {"role": "user", "content": words.join(" ")}
        ]
    });
    if stream == Some(true) {
        body["stream_options"] = json!({"include_usage": true});
    }
    let mut resp = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status();
    if status != reqwest::StatusCode::OK {
        let text = resp.text().await.unwrap_or_default();
        bail!(
            "HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        );
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        bytes.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(bytes).context("the answer is not UTF-8")?;
    if stream.is_none() {
        let answer: serde_json::Value =
            serde_json::from_str(&text).context("the answer is not JSON")?;
        let content = answer
            .pointer("/choices/0/message/content")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let want = format!("echo: {}", words.join(" "));
        if content != want {
            bail!(
                "the answer is not the echo: {}",
                content.chars().take(200).collect::<String>()
            );
        }
        return Ok(());
    }
    if !text.ends_with("data: [DONE]\n\n") {
        bail!(
            "the stream does not end with data: [DONE]: ...{}",
            tail_chars(&text, 300)
        );
    }
    if !text.contains(&format!("\"content\":\" {nonce}\"")) {
        bail!("the stream does not echo the request's nonce");
    }
    let content_events = text.matches("\"content\":\" word").count();
    if content_events != PROMPT_WORDS - 1 {
        bail!(
            "{content_events} content chunks of the {} words asked for",
            PROMPT_WORDS - 1
        );
    }
    Ok(())
}

fn tail_chars(s: &str, n: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    chars[chars.len().saturating_sub(n)..].iter().collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_full_gc_reading_fits_in_the_run() {
        let s = Duration::from_secs_f64;
        // Long runs: 15 s before the end.
        assert_eq!(second_gc_at(s(180.0), s(600.0)), Some(s(585.0)));
        assert_eq!(second_gc_at(s(30.0), s(60.0)), Some(s(45.0)));
        // Short ones: halfway from the first reading to the end, while 5 s are left.
        assert_eq!(second_gc_at(s(15.0), s(30.0)), Some(s(22.5)));
        assert_eq!(second_gc_at(s(10.0), s(20.0)), Some(s(15.0)));
        assert_eq!(second_gc_at(s(5.0), s(10.0)), None);
        assert_eq!(second_gc_at(s(3.0), s(6.0)), None);
    }
}
