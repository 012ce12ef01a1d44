//! The signature algorithms this Worker verifies, and the `JWT_ALGORITHMS` allow-list.

use std::fmt;

use super::KeyError;

/// A JWS signature algorithm the Worker implements. Asymmetric only: the Worker holds no secret
/// that could sign a token, so a leaked configuration can never mint one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA keys of 2048 to 4096 bits.
    RS256,
    /// ECDSA on P-256 with SHA-256; the signature is JOSE's raw `r || s` (64 bytes), not DER.
    ES256,
    /// Ed25519 (RFC 8037). The header may say `EdDSA` or, per RFC 9864, `Ed25519`.
    EdDSA,
}

impl Algorithm {
    /// `JWT_ALGORITHMS` when the variable is unset.
    pub const DEFAULT: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }

    /// The algorithm a token header's `alg` names. JOSE names are case-sensitive, so `rs256` in
    /// a header is unknown; `none` and `HS*` are told apart so they can be logged as attacks.
    pub(crate) fn from_header(alg: &str) -> Result<Algorithm, HeaderAlg> {
        match alg {
            "RS256" => Ok(Self::RS256),
            "ES256" => Ok(Self::ES256),
            "EdDSA" | "Ed25519" => Ok(Self::EdDSA),
            _ if alg.eq_ignore_ascii_case("none") => Err(HeaderAlg::None),
            _ if is_hmac(alg) => Err(HeaderAlg::Hmac),
            _ => Err(HeaderAlg::Unsupported),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a header's `alg` is not an [`Algorithm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderAlg {
    None,
    Hmac,
    Unsupported,
}

fn is_hmac(alg: &str) -> bool {
    alg.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("HS"))
}

/// Parses `JWT_ALGORITHMS`: comma-separated names, blanks and empty entries ignored, names matched
/// case-insensitively (it is our configuration, not a token), duplicates dropped, order kept.
///
/// `none` and any `HS*` are configuration errors, as are unknown names and an empty list. An
/// unset variable is the caller's business: use [`Algorithm::DEFAULT`].
pub fn parse_algorithms(s: &str) -> Result<Vec<Algorithm>, KeyError> {
    let mut out = Vec::with_capacity(3);
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let alg = if name.eq_ignore_ascii_case("RS256") {
            Algorithm::RS256
        } else if name.eq_ignore_ascii_case("ES256") {
            Algorithm::ES256
        } else if name.eq_ignore_ascii_case("EdDSA") || name.eq_ignore_ascii_case("Ed25519") {
            Algorithm::EdDSA
        } else if name.eq_ignore_ascii_case("none") {
            return Err(KeyError::AlgorithmNone);
        } else if is_hmac(name) {
            return Err(KeyError::AlgorithmHmac(name.to_owned()));
        } else {
            return Err(KeyError::UnsupportedAlgorithm(name.to_owned()));
        };
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    if out.is_empty() {
        return Err(KeyError::NoAlgorithms);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_default_list_and_variants() {
        assert_eq!(
            parse_algorithms("RS256,ES256,EdDSA").unwrap(),
            Algorithm::DEFAULT.to_vec()
        );
        assert_eq!(
            parse_algorithms(" es256 , eddsa,ES256").unwrap(),
            vec![Algorithm::ES256, Algorithm::EdDSA]
        );
        assert_eq!(parse_algorithms("Ed25519").unwrap(), vec![Algorithm::EdDSA]);
        assert_eq!(
            parse_algorithms("RS256,,ES256,").unwrap(),
            vec![Algorithm::RS256, Algorithm::ES256]
        );
    }

    #[test]
    fn config_with_none_or_hmac_or_unknown_is_an_error() {
        for s in ["none", "RS256,None", "NONE"] {
            assert_eq!(parse_algorithms(s), Err(KeyError::AlgorithmNone), "{s}");
        }
        for s in ["HS256", "RS256,hs512", "Hs384"] {
            assert!(
                matches!(parse_algorithms(s), Err(KeyError::AlgorithmHmac(_))),
                "{s}"
            );
        }
        for s in ["RS384", "PS256", "ES384", "RS256,ES512"] {
            assert!(
                matches!(parse_algorithms(s), Err(KeyError::UnsupportedAlgorithm(_))),
                "{s}"
            );
        }
        assert_eq!(parse_algorithms(""), Err(KeyError::NoAlgorithms));
        assert_eq!(parse_algorithms("  "), Err(KeyError::NoAlgorithms));
        assert_eq!(parse_algorithms(" , ,"), Err(KeyError::NoAlgorithms));
    }

    #[test]
    fn header_alg_is_case_sensitive_and_classifies_attacks() {
        assert_eq!(Algorithm::from_header("RS256"), Ok(Algorithm::RS256));
        assert_eq!(Algorithm::from_header("Ed25519"), Ok(Algorithm::EdDSA));
        assert_eq!(Algorithm::from_header("rs256"), Err(HeaderAlg::Unsupported));
        for a in ["none", "None", "NONE", "nOnE"] {
            assert_eq!(Algorithm::from_header(a), Err(HeaderAlg::None), "{a}");
        }
        for a in ["HS256", "hs384", "HS512"] {
            assert_eq!(Algorithm::from_header(a), Err(HeaderAlg::Hmac), "{a}");
        }
    }
}
