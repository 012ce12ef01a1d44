//! The checks on public keys and signatures that need the curves' arithmetic but no signature
//! check: done here, in a few lines of modular arithmetic, so a key is judged the same way when
//! it is parsed on every target (the Worker checks signatures with WebCrypto, host builds with
//! RustCrypto) and an Ed25519 signature is held to the same strict rules on both.
//!
//! - [`p256_on_curve`]: a P-256 point's coordinates are below the field prime and satisfy
//!   `y² = x³ - 3x + b` (what `p256::ecdsa::VerifyingKey::from_sec1_bytes` checks).
//! - [`ed25519_decodes`]: an Ed25519 encoding names a curve point (what
//!   `ed25519_dalek::VerifyingKey::from_bytes` checks).
//! - [`ed25519_small_order`]: the point has order 1, 2, 4 or 8 (dalek's `is_weak` for keys and
//!   the `R` check of `verify_strict`).
//! - [`ed25519_canonical_s`]: a signature's `S` is below the group order (`verify_strict`'s
//!   malleability check).
//!
//! Speed does not matter here (a key is parsed once; the small-order and `S` checks are byte
//! comparisons): multiplication is double-and-add.

/// A 256-bit number, little-endian 64-bit limbs.
type U256 = [u64; 4];

/// The P-256 field prime, 2^256 - 2^224 + 2^192 + 2^96 - 1.
const P256_P: U256 = [
    0xffff_ffff_ffff_ffff,
    0x0000_0000_ffff_ffff,
    0x0000_0000_0000_0000,
    0xffff_ffff_0000_0001,
];
/// P-256's `b`.
const P256_B: U256 = [
    0x3bce_3c3e_27d2_604b,
    0x651d_06b0_cc53_b0f6,
    0xb3eb_bd55_7698_86bc,
    0x5ac6_35d8_aa3a_93e7,
];
/// The Ed25519 field prime, 2^255 - 19.
const ED_P: U256 = [
    0xffff_ffff_ffff_ffed,
    0xffff_ffff_ffff_ffff,
    0xffff_ffff_ffff_ffff,
    0x7fff_ffff_ffff_ffff,
];
/// Edwards25519's `d` = -121665/121666 mod p.
const ED_D: U256 = [
    0x75eb_4dca_1359_78a3,
    0x0070_0a4d_4141_d8ab,
    0x8cc7_4079_7779_e898,
    0x5203_6cee_2b6f_fe73,
];
/// The order of Ed25519's base point, 2^252 + 27742317777372353535851937790883648493.
const ED_L: U256 = [
    0x5812_631a_5cf5_d3ed,
    0x14de_f9de_a2f7_9cd6,
    0x0000_0000_0000_0000,
    0x1000_0000_0000_0000,
];
/// The `y` coordinates of Edwards25519's two pairs of points of order 8 (the other small-order
/// points have `y` = 0, 1 or p - 1).
const ED_ORDER_8_Y: [U256; 2] = [
    [
        0xb027_b2c2_8f95_e826,
        0xf098_eff2_89f4_c345,
        0x3933_c6d3_05ac_dfd5,
        0x05fc_536d_8802_38b1,
    ],
    [
        0x4fd8_4d3d_706a_17c7,
        0x0f67_100d_760b_3cba,
        0xc6cc_392c_fa53_202a,
        0x7a03_ac92_77fd_c74e,
    ],
];

fn from_be(bytes: &[u8; 32]) -> U256 {
    let mut out = [0u64; 4];
    for (i, limb) in out.iter_mut().enumerate() {
        let at = 32 - 8 * (i + 1);
        *limb = u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    }
    out
}

fn from_le(bytes: &[u8; 32]) -> U256 {
    let mut out = [0u64; 4];
    for (i, limb) in out.iter_mut().enumerate() {
        *limb = u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap_or_default());
    }
    out
}

fn less(a: &U256, b: &U256) -> bool {
    for i in (0..4).rev() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
    }
    false
}

/// `a - b`, wrapping.
fn sub(a: &U256, b: &U256) -> U256 {
    let mut out = [0u64; 4];
    let mut borrow = false;
    for i in 0..4 {
        let (d, b1) = a[i].overflowing_sub(b[i]);
        let (d, b2) = d.overflowing_sub(u64::from(borrow));
        out[i] = d;
        borrow = b1 || b2;
    }
    out
}

/// `a + b mod p`, for `a`, `b` below `p`.
fn add_mod(a: &U256, b: &U256, p: &U256) -> U256 {
    let mut out = [0u64; 4];
    let mut carry = false;
    for i in 0..4 {
        let (s, c1) = a[i].overflowing_add(b[i]);
        let (s, c2) = s.overflowing_add(u64::from(carry));
        out[i] = s;
        carry = c1 || c2;
    }
    // The true sum is below 2p: one subtraction (wrapping, when the sum passed 2^256) is enough.
    if carry || !less(&out, p) {
        out = sub(&out, p);
    }
    out
}

fn sub_mod(a: &U256, b: &U256, p: &U256) -> U256 {
    if less(a, b) {
        // a - b + p, which is below p
        add_mod(a, &sub(p, b), p)
    } else {
        sub(a, b)
    }
}

/// `a * b mod p`, for `a`, `b` below `p`.
fn mul_mod(a: &U256, b: &U256, p: &U256) -> U256 {
    let mut out = [0u64; 4];
    for i in (0..256).rev() {
        out = add_mod(&out, &out, p);
        if b[i / 64] >> (i % 64) & 1 == 1 {
            out = add_mod(&out, a, p);
        }
    }
    out
}

/// `a * b mod 2^255 - 19`, for `a`, `b` below p: the 512-bit product, its high half folded in
/// with 2^256 = 38 (mod p). [`mul_mod`]'s double-and-add made an Ed25519 key's check (an
/// exponentiation: ~500 multiplications) cost 1.4 ms on the host; this, microseconds.
fn mul_ed(a: &U256, b: &U256) -> U256 {
    let mut t = [0u64; 8];
    for i in 0..4 {
        let mut carry = 0u128;
        for j in 0..4 {
            let cur = u128::from(t[i + j]) + u128::from(a[i]) * u128::from(b[j]) + carry;
            t[i + j] = cur as u64;
            carry = cur >> 64;
        }
        t[i + 4] = carry as u64;
    }
    let mut out = [0u64; 4];
    let mut carry = 0u128;
    for i in 0..4 {
        let cur = u128::from(t[i]) + u128::from(t[i + 4]) * 38 + carry;
        out[i] = cur as u64;
        carry = cur >> 64;
    }
    // What passed 2^256 (below 39) is worth 38 times as much at the bottom; adding it can pass
    // 2^256 once more only from a value that then wraps to below 38 * 39, so the last 38 fits.
    let mut extra = carry * 38;
    for limb in out.iter_mut() {
        let cur = u128::from(*limb) + extra;
        *limb = cur as u64;
        extra = cur >> 64;
    }
    if extra != 0 {
        out[0] += 38;
    }
    // Below 2^256 < 3p.
    while !less(&out, &ED_P) {
        out = sub(&out, &ED_P);
    }
    out
}

/// `base^exp` with the multiplication `mul`.
fn pow_with(base: &U256, exp: &U256, mul: impl Fn(&U256, &U256) -> U256) -> U256 {
    let mut out = [1, 0, 0, 0];
    for i in (0..256).rev() {
        out = mul(&out, &out);
        if exp[i / 64] >> (i % 64) & 1 == 1 {
            out = mul(&out, base);
        }
    }
    out
}

/// Whether the big-endian coordinates `x`, `y` are a point of P-256.
pub(crate) fn p256_on_curve(x: &[u8; 32], y: &[u8; 32]) -> bool {
    let (x, y) = (from_be(x), from_be(y));
    let p = &P256_P;
    if !less(&x, p) || !less(&y, p) {
        return false;
    }
    let x2 = mul_mod(&x, &x, p);
    let x3 = mul_mod(&x2, &x, p);
    let three_x = add_mod(&add_mod(&x, &x, p), &x, p);
    let right = add_mod(&sub_mod(&x3, &three_x, p), &P256_B, p);
    mul_mod(&y, &y, p) == right
}

/// An Ed25519 encoding's `y`, reduced below p as decoders do (the top bit is `x`'s sign).
fn ed25519_y(encoded: &[u8; 32]) -> U256 {
    let mut y = from_le(encoded);
    y[3] &= 0x7fff_ffff_ffff_ffff;
    if less(&y, &ED_P) {
        y
    } else {
        sub(&y, &ED_P)
    }
}

/// Whether an Ed25519 encoding decodes to a curve point: `x² = (y² - 1) / (d·y² + 1)` must have
/// a root, that is `(y² - 1)·(d·y² + 1)` is zero or a square (Euler's criterion).
pub(crate) fn ed25519_decodes(encoded: &[u8; 32]) -> bool {
    let p = &ED_P;
    let y = ed25519_y(encoded);
    let y2 = mul_ed(&y, &y);
    let u = sub_mod(&y2, &[1, 0, 0, 0], p);
    let v = add_mod(&mul_ed(&ED_D, &y2), &[1, 0, 0, 0], p);
    // (p - 1) / 2
    let half = [
        0xffff_ffff_ffff_fff6,
        0xffff_ffff_ffff_ffff,
        0xffff_ffff_ffff_ffff,
        0x3fff_ffff_ffff_ffff,
    ];
    let legendre = pow_with(&mul_ed(&u, &v), &half, mul_ed);
    legendre == [0; 4] || legendre == [1, 0, 0, 0]
}

/// Whether an Ed25519 encoding is of a point of small order (1, 2, 4 or 8): `y` is 0, 1,
/// p - 1 or one of the two order-8 values, whatever the sign bit.
pub(crate) fn ed25519_small_order(encoded: &[u8; 32]) -> bool {
    let y = ed25519_y(encoded);
    let minus_one = sub(&ED_P, &[1, 0, 0, 0]);
    y == [0; 4] || y == [1, 0, 0, 0] || y == minus_one || ED_ORDER_8_Y.contains(&y)
}

/// Whether an Ed25519 signature's `S` (its second half, little-endian) is below the group order.
pub(crate) fn ed25519_canonical_s(s: &[u8; 32]) -> bool {
    less(&from_le(s), &ED_L)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(v: &U256) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, limb) in v.iter().enumerate() {
            out[8 * i..8 * i + 8].copy_from_slice(&limb.to_le_bytes());
        }
        out
    }

    /// A deterministic stream of 32-byte strings.
    fn samples(n: usize) -> Vec<[u8; 32]> {
        let mut rng = fastrand::Rng::with_seed(15);
        (0..n)
            .map(|_| {
                let mut b = [0u8; 32];
                rng.fill(&mut b);
                b
            })
            .collect()
    }

    #[test]
    fn p256_points_agree_with_the_p256_crate() {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        for seed in samples(20) {
            let Ok(secret) = p256::SecretKey::from_slice(&seed) else {
                continue;
            };
            let point = secret.public_key().to_encoded_point(false);
            let x: [u8; 32] = (*point.x().unwrap()).into();
            let mut y: [u8; 32] = (*point.y().unwrap()).into();
            assert!(p256_on_curve(&x, &y));
            y[31] ^= 1;
            assert!(!p256_on_curve(&x, &y));
        }
        // Random coordinates: the verdict is the crate's.
        for pair in samples(40).chunks(2) {
            let mut sec1 = [4u8; 65];
            sec1[1..33].copy_from_slice(&pair[0]);
            sec1[33..].copy_from_slice(&pair[1]);
            assert_eq!(
                p256_on_curve(&pair[0], &pair[1]),
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).is_ok()
            );
        }
        // Coordinates at or above the prime are refused, even when reduced they would fit.
        let p = le(&P256_P);
        let mut p_be = p;
        p_be.reverse();
        assert!(!p256_on_curve(&p_be, &[0; 32]));
        assert!(!p256_on_curve(&[0; 32], &[0; 32]));
    }

    /// dalek's decoding of an encoding as a key.
    fn dalek(bytes: &[u8; 32]) -> Option<ed25519_dalek::VerifyingKey> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes).ok()
    }

    #[test]
    fn ed25519_points_agree_with_dalek() {
        let mut decodable = 0;
        for bytes in samples(100) {
            let point = dalek(&bytes);
            assert_eq!(ed25519_decodes(&bytes), point.is_some(), "{bytes:?}");
            if let Some(point) = point {
                decodable += 1;
                assert_eq!(ed25519_small_order(&bytes), point.is_weak());
            }
        }
        // About half of all encodings decode: both branches were exercised.
        assert!((25..75).contains(&decodable), "{decodable}");
        // Real keys decode and are not small.
        for seed in samples(10) {
            let key = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
            assert!(ed25519_decodes(key.as_bytes()));
            assert!(!ed25519_small_order(key.as_bytes()));
        }
    }

    #[test]
    fn every_small_order_encoding_is_caught() {
        let minus_one = sub(&ED_P, &[1, 0, 0, 0]);
        let ys = [
            [0; 4],
            [1, 0, 0, 0],
            minus_one,
            ED_ORDER_8_Y[0],
            ED_ORDER_8_Y[1],
        ];
        let mut seen = 0;
        for y in ys {
            // Each y with either sign bit, and y + p where that still fits in 255 bits.
            let mut spellings = vec![le(&y)];
            let mut signed = le(&y);
            signed[31] |= 0x80;
            spellings.push(signed);
            let plus_p = sub(&y, &sub(&[0; 4], &ED_P));
            if !less(&plus_p, &y) && plus_p[3] >> 63 == 0 {
                spellings.push(le(&plus_p));
            }
            for bytes in spellings {
                assert!(ed25519_small_order(&bytes), "{bytes:?}");
                if let Some(point) = dalek(&bytes) {
                    assert!(point.is_weak(), "{bytes:?}");
                    seen += 1;
                }
            }
        }
        // The identity, the order-2 point, two of order 4 and four of order 8 (and aliases).
        assert!(seen >= 8, "{seen}");
    }

    #[test]
    fn s_is_canonical_only_below_the_group_order() {
        let l = le(&ED_L);
        assert!(!ed25519_canonical_s(&l));
        assert!(ed25519_canonical_s(&le(&sub(&ED_L, &[1, 0, 0, 0]))));
        assert!(!ed25519_canonical_s(&[0xff; 32]));
        assert!(ed25519_canonical_s(&[0; 32]));
    }

    #[test]
    fn arithmetic_wraps_at_the_prime() {
        let p = &P256_P;
        let minus_one = sub(p, &[1, 0, 0, 0]);
        assert_eq!(add_mod(&minus_one, &[2, 0, 0, 0], p), [1, 0, 0, 0]);
        assert_eq!(sub_mod(&[1, 0, 0, 0], &[2, 0, 0, 0], p), minus_one);
        assert_eq!(mul_mod(&minus_one, &minus_one, p), [1, 0, 0, 0]);
        // Fermat: a^(p-1) = 1.
        let mul = |a: &U256, b: &U256| mul_mod(a, b, p);
        assert_eq!(
            pow_with(&[12345, 0, 0, 0], &sub(p, &[1, 0, 0, 0]), mul),
            [1, 0, 0, 0]
        );
    }

    #[test]
    fn the_ed25519_multiplication_agrees_with_double_and_add() {
        let below_p = |b: &[u8; 32]| {
            let mut v = from_le(b);
            v[3] &= 0x7fff_ffff_ffff_ffff;
            if less(&v, &ED_P) {
                v
            } else {
                sub(&v, &ED_P)
            }
        };
        let minus_one = sub(&ED_P, &[1, 0, 0, 0]);
        let mut values: Vec<U256> = samples(40).iter().map(below_p).collect();
        values.extend([[0; 4], [1, 0, 0, 0], minus_one, sub(&ED_P, &[19, 0, 0, 0])]);
        for a in &values {
            for b in values.iter().take(12) {
                assert_eq!(mul_ed(a, b), mul_mod(a, b, &ED_P), "{a:x?} * {b:x?}");
            }
        }
        // Fermat again, with it.
        assert_eq!(pow_with(&[7, 0, 0, 0], &minus_one, mul_ed), [1, 0, 0, 0]);
    }
}
