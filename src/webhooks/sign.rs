//! After the request path: what makes a delivery verifiable. `X-Databricks-Signature` is hex(HMAC-SHA256(secret,
//! body)) exactly as Databricks sends it; `X-MLflow-Gate-Signature` also covers the delivery id and timestamp so
//! receivers can refuse replays.

use aws_lc_rs::hmac;

/// An HMAC-SHA256 key; its `Debug` never shows the secret.
pub(crate) struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A key from the secret's bytes.
    pub(crate) fn new(secret: &[u8]) -> Secret {
        Secret(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// `X-Databricks-Signature`: lowercase hex of HMAC-SHA256 over the exact body.
    pub(crate) fn databricks(&self, body: &[u8]) -> String {
        hex(hmac::sign(&self.0, body).as_ref())
    }

    /// `X-MLflow-Gate-Signature`: `v1,` and the lowercase hex of HMAC-SHA256 over `<delivery_id>.<timestamp>.<body>`.
    pub(crate) fn gate_v1(&self, delivery_id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(format!("{delivery_id}.{timestamp}.").as_bytes());
        ctx.update(body);
        format!("v1,{}", hex(ctx.sign().as_ref()))
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random UUID (version 4) identifying one delivery across its attempts.
pub(crate) fn delivery_id() -> String {
    const VERSION_MASK: u128 = 0xf << 76;
    const VARIANT_MASK: u128 = 0xc << 60;
    let v = rand::random::<u128>() & !VERSION_MASK & !VARIANT_MASK | (0x4 << 76) | (0x8 << 60);
    let part = |shift: u32, digits: u32| (v >> shift) & ((1u128 << (4 * digits)) - 1);
    format!("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", part(96, 8), part(80, 4), part(64, 4), part(48, 4), part(0, 12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_case_2() {
        let sig = Secret::new(b"Jefe").databricks(b"what do ya want for nothing?");
        assert_eq!(sig, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn gate_signature_covers_id_and_timestamp() {
        let s = Secret::new(b"k");
        let v1 = s.gate_v1("id", 7, b"{}");
        assert_eq!(v1, format!("v1,{}", s.databricks(b"id.7.{}")));
        assert_ne!(v1, s.gate_v1("id", 8, b"{}"));
    }

    #[test]
    fn delivery_ids_look_like_uuid_v4() {
        let id = delivery_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.chars().nth(14), Some('4'));
        assert!(matches!(id.chars().nth(19), Some('8' | '9' | 'a' | 'b')), "{id}");
        assert_ne!(id, delivery_id());
    }
}
