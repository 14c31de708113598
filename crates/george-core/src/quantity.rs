//! Resource quantities in the Kubernetes notation the seed config uses
//! (`memory: 512Mi`, `cpu: 500m`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An amount of memory in bytes, written `512Mi`, `1Gi`, `256M` or a plain byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Memory(pub u64);

/// CPU in millicores, written `500m`, `1`, `1.5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cpu(pub u64);

impl std::str::FromStr for Memory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("invalid memory `{s}`; expected e.g. `512Mi` or `1Gi`"))?;
        let mult: u64 = match unit {
            "" => 1,
            "k" | "K" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            _ => return Err(format!("invalid memory unit in `{s}`; expected Ki, Mi, Gi, Ti, K, M or G")),
        };
        n.checked_mul(mult).map(Memory).ok_or_else(|| format!("memory `{s}` is too large"))
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MI: u64 = 1 << 20;
        if self.0.is_multiple_of(1 << 30) && self.0 > 0 {
            write!(f, "{}Gi", self.0 >> 30)
        } else if self.0.is_multiple_of(MI) && self.0 > 0 {
            write!(f, "{}Mi", self.0 >> 20)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl std::str::FromStr for Cpu {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let bad = || format!("invalid cpu `{s}`; expected millicores like `500m` or cores like `1.5`");
        if let Some(m) = t.strip_suffix('m') {
            return m.parse().map(Cpu).map_err(|_| bad());
        }
        let cores: f64 = t.parse().map_err(|_| bad())?;
        if !(cores.is_finite() && cores > 0.0) {
            return Err(bad());
        }
        Ok(Cpu((cores * 1000.0).round() as u64))
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}m", self.0)
    }
}

macro_rules! serde_via_str {
    ($t:ty, $expecting:literal) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$t, E> {
                        v.to_string().parse().map_err(E::custom)
                    }
                    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<$t, E> {
                        v.to_string().parse().map_err(E::custom)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

serde_via_str!(Memory, "a memory quantity such as `512Mi`");
serde_via_str!(Cpu, "a cpu quantity such as `500m`");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_quantities() {
        assert_eq!("512Mi".parse::<Memory>().unwrap().0, 512 << 20);
        assert_eq!("1G".parse::<Memory>().unwrap().0, 1_000_000_000);
        assert_eq!("500m".parse::<Cpu>().unwrap().0, 500);
        assert_eq!("1.5".parse::<Cpu>().unwrap().0, 1500);
        assert!("12Qi".parse::<Memory>().unwrap_err().contains("unit"));
        assert!("lots".parse::<Cpu>().is_err());
        assert_eq!(Memory(512 << 20).to_string(), "512Mi");
    }
}
