//! Authentication, sans IO: which mechanism to use, and the bytes each step sends.
//!
//! APOP is RFC 1939 §7; SASL in POP3 is RFC 5034, with PLAIN (RFC 4616), LOGIN (the de-facto
//! draft-murchison-sasl-login), CRAM-MD5 (RFC 2195), XOAUTH2 (Google's), OAUTHBEARER (RFC 7628)
//! and NTLM (MS-NLMP, "SPA" in Microsoft's mail products).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};

use super::reply::Capabilities;
use crate::secret::Secret;

/// One way of logging in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    User,
    Apop,
    Plain,
    Login,
    CramMd5,
    XOauth2,
    OauthBearer,
    Ntlm,
}

impl Mechanism {
    pub const ALL: [Mechanism; 8] = [
        Mechanism::User,
        Mechanism::Apop,
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::CramMd5,
        Mechanism::XOauth2,
        Mechanism::OauthBearer,
        Mechanism::Ntlm,
    ];

    /// The name used in the configuration (`auth = "cram-md5"`).
    pub fn config_name(self) -> &'static str {
        match self {
            Mechanism::User => "user",
            Mechanism::Apop => "apop",
            Mechanism::Plain => "plain",
            Mechanism::Login => "login",
            Mechanism::CramMd5 => "cram-md5",
            Mechanism::XOauth2 => "xoauth2",
            Mechanism::OauthBearer => "oauthbearer",
            Mechanism::Ntlm => "ntlm",
        }
    }

    /// The SASL name, for those that are SASL mechanisms.
    pub fn sasl_name(self) -> Option<&'static str> {
        match self {
            Mechanism::User | Mechanism::Apop => None,
            Mechanism::Plain => Some("PLAIN"),
            Mechanism::Login => Some("LOGIN"),
            Mechanism::CramMd5 => Some("CRAM-MD5"),
            Mechanism::XOauth2 => Some("XOAUTH2"),
            Mechanism::OauthBearer => Some("OAUTHBEARER"),
            Mechanism::Ntlm => Some("NTLM"),
        }
    }

    /// Whether the secret itself crosses the wire (readable by anyone on an unencrypted link).
    /// OAuth tokens count: they are bearer credentials.
    pub fn reveals_secret(self) -> bool {
        !matches!(self, Mechanism::Apop | Mechanism::CramMd5 | Mechanism::Ntlm)
    }
}

/// Picks the mechanism for `auth = "auto"`: the strongest that the server offers and that is safe
/// on this connection. Challenge-response mechanisms come first because they never reveal the
/// password; OAuth is never chosen automatically (its secret is a token, which must be asked for).
pub fn choose_auto(
    caps: &Capabilities,
    apop_stamp: bool,
    encrypted: bool,
    allow_insecure: bool,
) -> Option<Mechanism> {
    let offered = |m: Mechanism| match m {
        Mechanism::User => caps.user || !caps.known,
        Mechanism::Apop => apop_stamp,
        other => caps.has_sasl(other.sasl_name().unwrap_or_default()),
    };
    [
        Mechanism::CramMd5,
        Mechanism::Apop,
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::User,
    ]
    .into_iter()
    .filter(|&m| offered(m))
    .find(|&m| encrypted || allow_insecure || !m.reveals_secret())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `APOP user digest` (RFC 1939 §7): MD5 of the greeting's timestamp followed by the secret.
pub fn apop_command(user: &str, stamp: &str, secret: &Secret) -> String {
    let mut md5 = Md5::new();
    md5.update(stamp.as_bytes());
    md5.update(secret.expose().as_bytes());
    format!("APOP {user} {}", hex(&md5.finalize()))
}

/// PLAIN's one message (RFC 4616 §2): no authorization identity, then user and password.
pub fn plain_response(user: &str, secret: &Secret) -> String {
    B64.encode(format!("\0{user}\0{}", secret.expose()))
}

pub fn base64(text: &str) -> String {
    B64.encode(text)
}

/// CRAM-MD5's answer to the server's challenge (RFC 2195 §2).
pub fn cram_md5_response(
    user: &str,
    secret: &Secret,
    challenge_b64: &str,
) -> Result<String, AuthError> {
    let challenge = B64
        .decode(challenge_b64.trim())
        .map_err(|_| AuthError::BadChallenge)?;
    let mut mac =
        Hmac::<Md5>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(&challenge);
    Ok(B64.encode(format!("{user} {}", hex(&mac.finalize().into_bytes()))))
}

/// XOAUTH2's one message: user and bearer token.
pub fn xoauth2_response(user: &str, token: &Secret) -> String {
    B64.encode(format!(
        "user={user}\x01auth=Bearer {}\x01\x01",
        token.expose()
    ))
}

/// OAUTHBEARER's one message (RFC 7628 §3.1): a GS2 header with the user, host, port and token.
pub fn oauthbearer_response(user: &str, host: &str, port: u16, token: &Secret) -> String {
    let user = user.replace('=', "=3D").replace(',', "=2C");
    B64.encode(format!(
        "n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {}\x01\x01",
        token.expose()
    ))
}

/// What the client answers to an OAuth error challenge (RFC 7628 §3.2.3 for OAUTHBEARER, a single
/// `%x01`; Google's XOAUTH2 takes an empty line) so that the server ends with `-ERR`.
pub fn oauth_error_ack(mechanism: Mechanism) -> &'static str {
    match mechanism {
        Mechanism::OauthBearer => "AQ==",
        _ => "",
    }
}

/// Decodes the JSON error a server sends in an OAuth continuation, for the error message.
pub fn oauth_error_text(challenge_b64: &str) -> String {
    B64.decode(challenge_b64.trim())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|_| challenge_b64.to_string())
}

/// Splits `DOMAIN\user` into domain and user for NTLM.
fn ntlm_credentials(user: &str, secret: &Secret) -> ntlmclient::Credentials {
    let (domain, username) = user.split_once('\\').unwrap_or(("", user));
    ntlmclient::Credentials {
        username: username.to_string(),
        password: secret.expose().to_string(),
        domain: domain.to_string(),
    }
}

fn ntlm_flags() -> ntlmclient::Flags {
    use ntlmclient::Flags;
    Flags::NEGOTIATE_UNICODE
        | Flags::REQUEST_TARGET
        | Flags::NEGOTIATE_NTLM
        | Flags::NEGOTIATE_ALWAYS_SIGN
        | Flags::NEGOTIATE_NTLM2_KEY
        | Flags::NEGOTIATE_TARGET_INFO
        | Flags::NEGOTIATE_128BIT
}

/// NTLM's first message (Negotiate).
pub fn ntlm_negotiate() -> String {
    let message = ntlmclient::Message::Negotiate(ntlmclient::NegotiateMessage {
        flags: ntlm_flags(),
        supplied_domain: String::new(),
        supplied_workstation: String::new(),
        os_version: Default::default(),
    });
    B64.encode(
        message
            .to_bytes()
            .expect("a negotiate message always encodes"),
    )
}

/// NTLM's answer (Authenticate, with an NTLMv2 response) to the server's Challenge.
pub fn ntlm_authenticate(
    user: &str,
    secret: &Secret,
    challenge_b64: &str,
) -> Result<String, AuthError> {
    let bytes = B64
        .decode(challenge_b64.trim())
        .map_err(|_| AuthError::BadChallenge)?;
    let challenge = match ntlmclient::Message::try_from(bytes.as_slice()) {
        Ok(ntlmclient::Message::Challenge(c)) => c,
        _ => return Err(AuthError::BadChallenge),
    };
    let target_info: Vec<u8> = challenge
        .target_information
        .iter()
        .flat_map(|e| e.to_bytes())
        .collect();
    let creds = ntlm_credentials(user, secret);
    let response = ntlmclient::respond_challenge_ntlm_v2(
        challenge.challenge,
        &target_info,
        ntlmclient::get_ntlm_time(),
        &creds,
    );
    let message = response.to_message(&creds, "OUTPOST", ntlm_flags());
    let encoded = message.to_bytes().map_err(|_| AuthError::BadChallenge)?;
    Ok(B64.encode(encoded))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the server's SASL challenge is not valid")]
    BadChallenge,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apop_matches_rfc_1939_example() {
        let cmd = apop_command(
            "mrose",
            "<1896.697170952@dbc.mtview.ca.us>",
            &Secret::new("tanstaaf"),
        );
        assert_eq!(cmd, "APOP mrose c4c9334bac560ecc979e58001b3e22fb");
    }

    #[test]
    fn cram_md5_matches_rfc_2195_example() {
        let challenge = B64.encode("<1896.697170952@postoffice.reston.mci.net>");
        let answer =
            cram_md5_response("tim", &Secret::new("tanstaaftanstaaf"), &challenge).unwrap();
        assert_eq!(
            B64.decode(answer).unwrap(),
            b"tim b913a602c7eda7a495b4e6e7334d3890"
        );
    }

    #[test]
    fn plain_and_oauth_messages() {
        assert_eq!(
            B64.decode(plain_response("u", &Secret::new("p"))).unwrap(),
            b"\0u\0p"
        );
        assert_eq!(
            B64.decode(xoauth2_response("u@x", &Secret::new("tok")))
                .unwrap(),
            b"user=u@x\x01auth=Bearer tok\x01\x01"
        );
        assert_eq!(
            B64.decode(oauthbearer_response("a,b=c", "h", 995, &Secret::new("t")))
                .unwrap(),
            b"n,a=a=2Cb=3Dc,\x01host=h\x01port=995\x01auth=Bearer t\x01\x01"
        );
    }

    #[test]
    fn auto_never_reveals_a_password_on_a_clear_link() {
        let mut caps = Capabilities {
            known: true,
            user: true,
            ..Default::default()
        };
        caps.add_line("SASL PLAIN LOGIN");
        assert_eq!(choose_auto(&caps, false, false, false), None);
        assert_eq!(
            choose_auto(&caps, false, true, false),
            Some(Mechanism::Plain)
        );
        assert_eq!(
            choose_auto(&caps, true, false, false),
            Some(Mechanism::Apop)
        );
        caps.add_line("SASL CRAM-MD5");
        assert_eq!(
            choose_auto(&caps, true, true, false),
            Some(Mechanism::CramMd5)
        );
        assert_eq!(
            choose_auto(&caps, false, false, true),
            Some(Mechanism::CramMd5)
        );
    }

    #[test]
    fn ntlm_answers_a_challenge() {
        let negotiate = B64.decode(ntlm_negotiate()).unwrap();
        assert!(negotiate.starts_with(b"NTLMSSP\0\x01\0\0\0"));
        assert_eq!(
            ntlm_authenticate("u", &Secret::new("p"), "bm90IG50bG0="),
            Err(AuthError::BadChallenge)
        );
    }
}
