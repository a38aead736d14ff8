//! Peak resident memory of this process, as the kernel counts it (Linux `VmHWM`).

/// Peak RSS in bytes, or 0 where `/proc/self/status` is not available.
pub fn peak_rss_bytes() -> u64 {
    status_kb("VmHWM:") * 1024
}

/// Current RSS in bytes, or 0 where `/proc/self/status` is not available.
pub fn current_rss_bytes() -> u64 {
    status_kb("VmRSS:") * 1024
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// Resets the peak to the current RSS (Linux 4.0+: `5` written to
/// `/proc/self/clear_refs`), so that a benchmark's runs are measured one by one. False
/// where that is not possible; the peak then counts from the start of the process.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_plausible_value_on_linux() {
        let v = super::peak_rss_bytes();
        if cfg!(target_os = "linux") {
            assert!(v > 1 << 20 && v < 1 << 40, "{v}");
        }
    }
}
