use super::*;

#[test]
fn vm_rss_is_read_in_mib() {
    let status = "Name:\tnmi\nVmPeak:\t  900000 kB\nVmRSS:\t   12288 kB\nRssAnon:\t 8000 kB\n";
    assert_eq!(parse_vm_rss_mib(status), Some(12.0));
    assert_eq!(parse_vm_rss_mib("Name:\tx\n"), None);
    assert_eq!(parse_vm_rss_mib("VmRSS:\tlots kB\n"), None);
}

#[test]
fn own_process_has_a_resident_size() {
    let mib = rss_mib(std::process::id()).unwrap();
    assert!(mib > 0.0 && mib < 100_000.0, "{mib}");
}

#[test]
fn long_runs_compare_the_second_and_the_last_minute() {
    // 10 minutes, a sample every 10 s: 10 MiB in the second minute, 11 MiB in the last.
    let samples: Vec<(f64, f64)> = (0..=60)
        .map(|i| {
            let t = f64::from(i) * 10.0;
            (
                t,
                if t >= 540.0 {
                    11.0
                } else if t < 60.0 {
                    50.0
                } else {
                    10.0
                },
            )
        })
        .collect();
    let f = flatness(&samples, 600.0).unwrap();
    assert_eq!((f.early_mib, f.late_mib), (10.0, 11.0));
    assert!((f.ratio - 1.1).abs() < 1e-9);
}

#[test]
fn short_runs_compare_quarters_and_need_samples_in_both() {
    // 60 s: the second quarter is [15, 30), the last [45, 60].
    let samples = [(10.0, 5.0), (20.0, 6.0), (25.0, 7.0), (50.0, 7.0), (55.0, 9.0)];
    let f = flatness(&samples, 60.0).unwrap();
    assert_eq!((f.early_mib, f.late_mib), (6.5, 8.0));
    assert_eq!(flatness(&samples[..3], 60.0), None);
}

#[test]
fn rounding() {
    assert_eq!(round(1.23456, 2), 1.23);
    assert_eq!(round(1234.56, 0), 1235.0);
}
