//! GPUs, from NVML (NVIDIA) and from the kernel's DRM interfaces (AMD, Intel, others).

pub mod drm;
pub mod figures;
pub mod nvidia;

use std::str::FromStr;

use crate::ProbeError;

/// Where GPU figures come from (`--gpu-source`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GpuSourceKind {
    /// NVML when libnvidia-ml loads (on the real machine only), plus DRM devices under the root.
    #[default]
    Auto,
    Nvml,
    Drm,
    None,
}

impl FromStr for GpuSourceKind {
    type Err = ProbeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(GpuSourceKind::Auto),
            "nvml" => Ok(GpuSourceKind::Nvml),
            "drm" => Ok(GpuSourceKind::Drm),
            "none" => Ok(GpuSourceKind::None),
            other => Err(ProbeError::BadArgument(format!(
                "unknown GPU source {:?} (expected auto, nvml, drm or none)",
                crate::sanitize::sanitize(other, 40)
            ))),
        }
    }
}

/// The kernel's PCI address form, lower case with a 4-digit domain: NVML prints
/// `00000000:03:00.0`, sysfs `0000:03:00.0`.
pub fn normalize_bus_id(raw: &str) -> String {
    // From sysfs or a driver: untrusted text, kept short and free of escapes.
    let lower = crate::sanitize::sanitize(raw.trim(), 32).to_ascii_lowercase();
    match lower.split_once(':') {
        Some((domain, rest)) if domain.len() > 4 && domain.is_ascii() => {
            format!("{}:{rest}", &domain[domain.len() - 4..])
        }
        _ => lower,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids() {
        assert_eq!(normalize_bus_id("00000000:3B:00.0"), "0000:3b:00.0");
        assert_eq!(normalize_bus_id("0000:c3:00.0\n"), "0000:c3:00.0");
    }

    #[test]
    fn sources() {
        assert_eq!("drm".parse::<GpuSourceKind>().unwrap(), GpuSourceKind::Drm);
        let e = "cuda".parse::<GpuSourceKind>().unwrap_err().to_string();
        assert!(e.contains("unknown GPU source \"cuda\""), "{e}");
    }
}
