//! The plot's buckets, ticks and clipping.

use super::*;

/// A pass of `secs` seconds at `mb_s` MB/s, sampled every 0.1 s, with a burst of
/// `burst` MB/s in its first second.
fn timeline(secs: f64, mb_s: f64, burst: f64) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut bytes = 0.0;
    let mut t = 0.0;
    while t < secs {
        t += 0.1;
        bytes += if t <= 1.0 { burst } else { mb_s } * 1e5;
        out.push(Sample {
            t,
            bytes: bytes as u64,
            items: 0,
        });
    }
    out
}

#[test]
fn ticks_are_one_two_or_five_times_a_power_of_ten() {
    for (x, want) in [
        (0.7, 1.0),
        (1.0, 1.0),
        (1.3, 2.0),
        (3.8, 5.0),
        (19.0, 20.0),
        (57.0, 100.0),
        (0.013, 0.02),
    ] {
        assert!(
            (nice_step(x) - want).abs() < 1e-9,
            "{x}: {} not {want}",
            nice_step(x)
        );
    }
    // The 19/38/57/76 of issue 22 (a peak of ~76 MB/s) becomes a 20 step.
    let (top, step) = y_axis(&[76.0, 70.0, 72.0, 75.0], &[]);
    assert_eq!((top, step), (80.0, 20.0));
}

#[test]
fn long_passes_are_averaged_over_two_second_buckets() {
    let b = buckets(&timeline(60.0, 10.0, 10.0));
    assert_eq!(b.len(), 30, "{b:?}");
    for x in &b {
        assert!((x.mb_per_s - 10.0).abs() < 0.2, "{x:?}");
    }
    // A short pass still gets ten buckets, not a single point.
    assert_eq!(buckets(&timeline(1.5, 10.0, 10.0)).len(), 10);
    assert!(buckets(&[]).is_empty());
}

#[test]
fn a_start_up_spike_is_clipped_and_marked_not_squeezing_the_rest() {
    let samples = timeline(60.0, 10.0, 140.0);
    let b = buckets(&samples);
    assert!(b[0].mb_per_s > 60.0, "{:?}", b[0]);
    let rates: Vec<f64> = b.iter().map(|b| b.mb_per_s).collect();
    let (top, _) = y_axis(&rates, &[]);
    assert!(
        top <= 20.0,
        "the real 10 MB/s uses most of the height: top {top}"
    );
    let svg = svg(&samples, Some(12_000_000));
    assert_eq!(svg.matches("class=\"clipped\"").count(), 1, "{svg}");
    assert!(
        svg.contains("class=\"average\"") && svg.contains("class=\"limit\""),
        "{svg}"
    );
    assert!(svg.contains("throttle 12.0 MB/s"), "{svg}");
    // Without a spike nothing is clipped, and a far-away limit is named, not drawn.
    let svg = super::svg(&timeline(60.0, 10.0, 10.0), Some(500_000_000));
    assert!(!svg.contains("class=\"clipped\"") && !svg.contains("class=\"limit\""));
    assert!(svg.contains("above the plot"));
    assert_eq!(svg.matches("<polyline").count(), 1);
}
