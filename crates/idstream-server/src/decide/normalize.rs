//! Normalising identity values and turning them into keyed hashes.
//!
//! Blocklists and velocity compare values that users type in many forms, so each kind has one
//! normal form, and only an HMAC-SHA256 of it (under the installation's blocklist key) is
//! stored: the blocklist and the velocity index do not reveal the blocked documents, phones or
//! emails, and their hashes cannot be brute-forced without the key. (Values that arrived in a
//! provider's webhook are, of course, also in that webhook's stored body and in the inputs of
//! its decision, as the audit trail requires.)
//!
//! | kind | normal form |
//! |---|---|
//! | `document` | issuing country (as the provider reports it, upper-cased; `*` = any) + the number upper-cased without spaces, dashes, dots or slashes |
//! | `phone` | E.164: `+` and 7–15 digits (`00` prefix → `+`; spaces, dashes, dots, parentheses dropped) |
//! | `email` | trimmed and case-folded; must have one `@` with text on both sides |
//! | `face` | the provider's face id or image hash, trimmed, as is |

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const KINDS: &[&str] = &["document", "phone", "email", "face"];

/// The installation's key for identity hashes.
#[derive(Clone)]
pub struct HashKey(Vec<u8>);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(..)")
    }
}

impl HashKey {
    pub fn new(bytes: Vec<u8>) -> HashKey {
        HashKey(bytes)
    }

    /// A random key that is never stored (benchmarks, read-only tools that hash nothing).
    pub fn ephemeral() -> HashKey {
        HashKey(rand::random::<[u8; 32]>().to_vec())
    }

    /// Reads the key file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<HashKey> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let bytes =
            hex::decode(text.trim()).with_context(|| format!("{}: the blocklist key must be hex", path.display()))?;
        anyhow::ensure!(bytes.len() >= 16, "{}: the blocklist key must be at least 16 bytes", path.display());
        Ok(HashKey(bytes))
    }

    /// Reads the key file, creating it (32 random bytes, hex, mode 0600) when it is missing.
    pub fn load_or_create(path: &std::path::Path) -> anyhow::Result<HashKey> {
        use anyhow::Context as _;
        match std::fs::read_to_string(path) {
            Ok(_) => HashKey::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes: [u8; 32] = rand::random();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                }
                crate::util::create_private_file(path, hex::encode(bytes).as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(HashKey(bytes.to_vec()))
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// A MAC of `data` for `purpose` (e.g. `oidc-state`), under the installation key: every node
    /// of an installation computes the same one. Purposes never equal a blocklist kind.
    pub fn sign(&self, purpose: &str, data: &str) -> String {
        self.hash(purpose, data)
    }

    /// A separate key for another purpose (`label`), derived from this one (HMAC-SHA256), so
    /// every node holding the hash key agrees on it without storing a second secret.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"idstream derived key\0");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn hash(&self, kind: &str, normal: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(kind.as_bytes());
        mac.update(b"\0");
        mac.update(normal.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The keyed hash of a value of `kind` (document: `country` may be `None` = any country).
    pub fn value_hash(&self, kind: &str, value: &str, country: Option<&str>) -> Result<String, String> {
        Ok(self.normal_hash(kind, &normal_form(kind, value, country)?))
    }

    /// The keyed hash of a value already in its [`normal_form`].
    pub fn normal_hash(&self, kind: &str, normal: &str) -> String {
        self.hash(kind, normal)
    }
}

/// The normal form of a value of `kind`, the text that is hashed (see the module's table);
/// an error says why the value cannot be one.
pub fn normal_form(kind: &str, value: &str, country: Option<&str>) -> Result<String, String> {
    Ok(match kind {
        "document" => {
            let number = document_number(value)?;
            let country = match country {
                Some(c) => country_code(c)?,
                None => "*".to_owned(),
            };
            format!("{country}:{number}")
        }
        "phone" => phone(value)?,
        "email" => email(value)?,
        "face" => face(value)?,
        other => return Err(format!("unknown blocklist kind `{other}` (expected document, phone, email, face)")),
    })
}

pub fn document_number(s: &str) -> Result<String, String> {
    let n: String =
        s.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '/' | '\t')).flat_map(char::to_uppercase).collect();
    if n.is_empty() {
        return Err("the document number is empty".into());
    }
    if !n.chars().all(char::is_alphanumeric) {
        return Err("a document number may only contain letters and digits (and spaces, dashes, dots, slashes)".into());
    }
    Ok(n)
}

pub fn country_code(s: &str) -> Result<String, String> {
    let c = s.trim().to_ascii_uppercase();
    if !(2..=3).contains(&c.len()) || !c.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err("`issuing_country` must be an ISO 3166-1 code as the provider reports it (e.g. ESP)".into());
    }
    Ok(c)
}

pub fn phone(s: &str) -> Result<String, String> {
    let mut p: String = s.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\t')).collect();
    if let Some(rest) = p.strip_prefix("00") {
        p = format!("+{rest}");
    }
    let digits = p.strip_prefix('+').unwrap_or("");
    if digits.len() < 7 || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit()) || digits.starts_with('0') {
        return Err("a phone number must be in international format: `+`, country code and number (E.164)".into());
    }
    Ok(p)
}

pub fn email(s: &str) -> Result<String, String> {
    let e = s.trim().to_lowercase();
    match e.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => Ok(e),
        _ => Err("an email address needs one `@` with text on both sides".into()),
    }
}

pub fn face(s: &str) -> Result<String, String> {
    let f = s.trim();
    if f.is_empty() {
        return Err("the face id is empty".into());
    }
    Ok(f.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_forms() {
        assert_eq!(document_number(" ab-12.345/6 ").unwrap(), "AB123456");
        assert!(document_number(" - ").is_err());
        assert!(document_number("AB#1").is_err());
        assert_eq!(phone("+34 (600) 11-22-33").unwrap(), "+34600112233");
        assert_eq!(phone("0034600112233").unwrap(), "+34600112233");
        assert!(phone("600112233").is_err(), "no country code");
        assert!(phone("+12").is_err());
        assert!(phone("+3460011223344556").is_err(), "more than 15 digits");
        assert_eq!(email("  Ana.Lopez@Example.COM ").unwrap(), "ana.lopez@example.com");
        assert!(email("ana").is_err());
        assert!(email("a@b@c").is_err());
        assert!(email("@b").is_err());
        assert_eq!(country_code(" esp ").unwrap(), "ESP");
        assert!(country_code("Spain").is_err());
    }

    #[test]
    fn hashes_are_keyed_and_agree_across_forms() {
        let k = HashKey::new(vec![7; 32]);
        let a = k.value_hash("phone", "+34 600 11 22 33", None).unwrap();
        assert_eq!(a, k.value_hash("phone", "0034-600-112-233", None).unwrap());
        assert_ne!(a, HashKey::new(vec![8; 32]).value_hash("phone", "+34600112233", None).unwrap());
        assert_ne!(a, k.value_hash("email", "x@y.z", None).unwrap());
        let any = k.value_hash("document", "X-123", None).unwrap();
        let esp = k.value_hash("document", "x123", Some("esp")).unwrap();
        assert_ne!(any, esp);
        assert_eq!(esp, k.value_hash("document", "X 123", Some("ESP")).unwrap());
        assert!(!a.contains("600"), "the hash does not contain the value");
        assert!(k.value_hash("iban", "x", None).is_err());
    }
}
