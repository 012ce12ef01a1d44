//! The figures of a run, and what the verdict compares.

use std::time::Duration;

use anyhow::{Context, Result};

use super::{
    load::{Done, Run},
    memory::{Rss, Sample, SAMPLE_EVERY},
    Settings,
};

/// What the run found, for the verdict.
pub struct Summary {
    pub errors: u64,
    pub growth_percent: f64,
    /// Which readings the growth compares.
    pub growth_basis: &'static str,
}

/// Prints the run's figures: requests, latency, the runtime's and the dev proxy's memory at
/// the start (after the warm-up), the middle and the end, and after the two full GCs.
pub fn report(settings: &Settings, run: &Run) -> Result<Summary> {
    let Run {
        elapsed,
        warm_up,
        ref done,
        errors,
        ref samples,
        gc_start,
        gc_end,
        gc_end_planned,
    } = *run;
    let measured: Vec<&Done> = done.iter().filter(|d| d.at >= warm_up).collect();
    let window = elapsed
        .saturating_sub(warm_up)
        .as_secs_f64()
        .max(f64::MIN_POSITIVE);
    let mut latencies: Vec<Duration> = measured.iter().map(|d| d.latency).collect();
    latencies.sort_unstable();
    let pct = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i.min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };

    // Readings where the runtime was found (a restarted runtime shows as a gap).
    let live: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.runtime.processes > 0)
        .collect();
    let at_or_after = |t: Duration| live.iter().find(|s| s.at >= t).or(live.last()).copied();
    let start = at_or_after(warm_up).context("no memory reading after the warm-up")?;
    let middle = at_or_after(warm_up + elapsed.saturating_sub(warm_up) / 2)
        .context("no memory reading at the middle")?;
    let end = *live.last().context("no memory reading at the end")?;
    let peak = |pick: fn(&Sample) -> Rss| -> (f64, f64) {
        live.iter()
            .max_by_key(|s| pick(s).kb)
            .map(|s| (pick(s).mb(), s.at.as_secs_f64()))
            .unwrap_or_default()
    };
    let growth = |pick: fn(&Sample) -> Rss| -> f64 {
        (pick(&end).kb as f64 - pick(&start).kb as f64) / (pick(&start).kb as f64).max(1.0) * 100.0
    };
    let raw_growth = growth(|s| s.runtime);

    println!(
        "\nsoak results ({:.1} s of load, {} users)\n",
        elapsed.as_secs_f64(),
        settings.users
    );
    println!("  requests served        {}", done.len());
    println!("  errors                 {errors}");
    println!(
        "  after warm-up          {} requests in {:.1} s: {:.1} requests/s",
        measured.len(),
        window,
        measured.len() as f64 / window
    );
    println!(
        "  latency (whole stream) p50 {:.1} ms, p99 {:.1} ms",
        pct(0.50),
        pct(0.99)
    );
    for (name, pick) in [
        (
            "Worker runtime RSS",
            (|s: &Sample| s.runtime) as fn(&Sample) -> Rss,
        ),
        ("dev proxy RSS", |s: &Sample| s.proxy),
    ] {
        let (peak_mb, peak_at) = peak(pick);
        println!(
            "  {name:<22} start {:.1} MB ({:.0} s), middle {:.1} MB ({:.0} s), end {:.1} MB \
             ({:.0} s); growth {:+.1}%; peak {peak_mb:.1} MB ({peak_at:.0} s)",
            pick(&start).mb(),
            start.at.as_secs_f64(),
            pick(&middle).mb(),
            middle.at.as_secs_f64(),
            pick(&end).mb(),
            end.at.as_secs_f64(),
            growth(pick)
        );
    }
    let half = (middle.runtime.kb as f64 - start.runtime.kb as f64).max(0.0);
    let second_half = end.runtime.kb as f64 - middle.runtime.kb as f64;
    println!(
        "  second half            Worker runtime {:+.1} MB from the middle to the end \
         (first half {:+.1} MB): {}",
        second_half / 1024.0,
        half / 1024.0,
        if second_half <= half * 0.25 {
            "levelled off"
        } else {
            "still climbing"
        }
    );
    let (growth_percent, growth_basis) = match (gc_start, gc_end) {
        (Some(a), Some(b)) => {
            let g = (b.runtime.kb as f64 - a.runtime.kb as f64) / (a.runtime.kb as f64).max(1.0)
                * 100.0;
            println!(
                "  after a full GC        start {:.1} MB ({:.0} s), end {:.1} MB ({:.0} s); \
                 growth {g:+.1}% (Worker runtime; dev proxy {:.1} -> {:.1} MB)",
                a.runtime.mb(),
                a.at.as_secs_f64(),
                b.runtime.mb(),
                b.at.as_secs_f64(),
                a.proxy.mb(),
                b.proxy.mb(),
            );
            (g, "after a full GC, end vs start")
        }
        _ => {
            let why = if gc_end_planned || gc_start.is_none() {
                "the isolate's inspector did not answer"
            } else {
                "the run is too short for a second reading"
            };
            println!("  after a full GC        (not measured: {why})");
            (raw_growth, "end vs start, under load")
        }
    };
    println!(
        "  ({} readings every {} s; the verdict is on the Worker runtime: {growth_basis})",
        live.len(),
        SAMPLE_EVERY.as_secs()
    );
    Ok(Summary {
        errors,
        growth_percent,
        growth_basis,
    })
}
