//! Compilation targets: a device and a precision, spelled `cpu-w4a8`, `orin-w8a8`, `h100-w4ax`...

use std::fmt;
use std::str::FromStr;

/// Where the artifact will run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Device {
    /// Any CPU (x86-64 or aarch64).
    Cpu,
    /// NVIDIA Jetson Orin (sm_87).
    Orin,
    /// NVIDIA RTX A5000 (sm_86).
    A5000,
    /// NVIDIA H100 / H200 (sm_90).
    H100,
}

/// Weight and activation bit widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    /// 8-bit weights, 8-bit activations.
    W8A8,
    /// 4-bit weights, 8-bit activations.
    W4A8,
    /// 4-bit weights, 16-bit (floating) activations.
    W4A16,
    /// 4-bit weights; per layer 8-bit or 16-bit activations, chosen by sensitivity.
    W4AX,
}

impl Precision {
    /// Weight bits.
    pub fn weight_bits(self) -> u8 {
        match self {
            Precision::W8A8 => 8,
            _ => 4,
        }
    }
    /// Whether any layer quantizes its activations to 8 bits.
    pub fn quantizes_activations(self) -> bool {
        !matches!(self, Precision::W4A16)
    }
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Precision::W8A8 => "w8a8",
            Precision::W4A8 => "w4a8",
            Precision::W4A16 => "w4a16",
            Precision::W4AX => "w4ax",
        }
    }
}

/// A device + precision pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// The device.
    pub device: Device,
    /// The precision.
    pub precision: Precision,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = match self.device {
            Device::Cpu => "cpu",
            Device::Orin => "orin",
            Device::A5000 => "a5000",
            Device::H100 => "h100",
        };
        write!(f, "{d}-{}", self.precision.name())
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        let err = || format!("unknown target `{s}`: expected DEVICE-PRECISION with DEVICE in cpu, orin, a5000, h100 and PRECISION in w8a8, w4a8, w4a16, w4ax (e.g. orin-w4a8)");
        let (d, p) = s.split_once('-').ok_or_else(err)?;
        let device = match d {
            "cpu" => Device::Cpu,
            "orin" => Device::Orin,
            "a5000" => Device::A5000,
            "h100" | "h200" => Device::H100,
            _ => return Err(err()),
        };
        let precision = match p {
            "w8a8" => Precision::W8A8,
            "w4a8" => Precision::W4A8,
            "w4a16" => Precision::W4A16,
            "w4ax" => Precision::W4AX,
            _ => return Err(err()),
        };
        Ok(Target { device, precision })
    }
}

/// Which recipe decides scales and transforms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
pub enum Method {
    /// Per-tensor min-max everywhere, round-to-nearest weights, no transforms: the baseline.
    Naive,
    /// Quamba (arXiv 2410.13229): percentile clipping of the SSM input, Hadamard before out_proj.
    Quamba1,
    /// Quamba2 (arXiv 2503.22879): rotated residual stream, sort-and-cluster, per-state-group
    /// B/C scales, GPTQ for 4-bit weights.
    Quamba2,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print() {
        for s in ["cpu-w8a8", "orin-w4a8", "a5000-w4a16", "h100-w4ax"] {
            assert_eq!(s.parse::<Target>().unwrap().to_string(), s);
        }
        assert!("tpu-w4a8".parse::<Target>().unwrap_err().contains("unknown target `tpu-w4a8`"));
        assert!("cpu-w2a2".parse::<Target>().is_err());
    }
}
