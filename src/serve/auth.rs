//! Access control of `persona serve` (`[serve.auth]`): bearer tokens with
//! roles, kept as SHA-256 hashes and compared in constant time, and the
//! audit log of admin actions.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{wall_clock_ms, AuthConfig, ConfigError, Role, TokenConfig};

/// Who called, once their token is checked: handlers read it from the
/// request's extensions.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: Arc<str>,
    /// Profile fields this caller does not see.
    pub hidden: Arc<[String]>,
}

struct Token {
    caller: Caller,
    sha256: [u8; 32],
    roles: Vec<Role>,
}

/// The tokens of `[serve.auth]`, and where admin actions are logged.
pub struct Auth {
    tokens: Vec<Token>,
    audit: Mutex<Box<dyn Write + Send>>,
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Result<Auth, ConfigError> {
        let mut tokens = Vec::new();
        let from_file = match &config.tokens_file {
            Some(path) => read_tokens_file(path)?,
            None => Vec::new(),
        };
        for token in config.tokens.iter().chain(&from_file) {
            let sha256 = decode_sha256(&token.sha256).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "[serve.auth] token {:?}: sha256 must be 64 hex digits (the token's SHA-256)",
                    token.name
                ))
            })?;
            if token.roles.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "[serve.auth] token {:?} has no roles",
                    token.name
                )));
            }
            tokens.push(Token {
                caller: Caller {
                    name: Arc::from(token.name.as_str()),
                    hidden: Arc::from(token.hide_profile_fields.clone()),
                },
                sha256,
                roles: token.roles.clone(),
            });
        }
        let audit: Box<dyn Write + Send> = match &config.audit_log {
            None => Box::new(std::io::stderr()),
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| {
                        ConfigError::Invalid(format!(
                            "[serve.auth] cannot open audit_log {}: {error}",
                            path.display()
                        ))
                    })?,
            ),
        };
        if tokens.is_empty() {
            return Err(ConfigError::Invalid(
                "[serve.auth] has no tokens: add [[serve.auth.tokens]] or a tokens_file".into(),
            ));
        }
        Ok(Auth {
            tokens,
            audit: Mutex::new(audit),
        })
    }

    /// The token a bearer `Authorization` header presents, if it is one of
    /// ours. Every token is compared, in constant time, whatever matches.
    fn token(&self, authorization: Option<&str>) -> Option<&Token> {
        // The scheme is case-insensitive (RFC 9110): `bearer` too.
        let (scheme, presented) = authorization?.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let presented = presented.trim();
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.sha256.ct_eq(&hash)) {
                found = Some(token);
            }
        }
        found
    }

    /// Writes one line to the audit log ([`audit_line`]).
    pub fn audit(&self, caller: Option<&Caller>, action: &str, request: u64) {
        let line = audit_line(caller, action, request);
        let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = writeln!(audit, "{line}").and_then(|()| audit.flush()) {
            tracing::error!("cannot write the audit log: {error}");
        }
    }
}

/// The `[[tokens]]` of a tokens file.
fn read_tokens_file(path: &std::path::Path) -> Result<Vec<TokenConfig>, ConfigError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TokensFile {
        tokens: Vec<TokenConfig>,
    }
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::Invalid(format!(
            "[serve.auth] cannot read tokens_file {}: {error}",
            path.display()
        ))
    })?;
    let file: TokensFile = toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok(file.tokens)
}

/// A line of the audit log: who did what, when, as which request; never
/// the user or any other personal data.
pub fn audit_line(caller: Option<&Caller>, action: &str, request: u64) -> String {
    let line = json!({
        "at_ms": wall_clock_ms(),
        "caller": caller.map_or("anonymous", |c| &c.name),
        "action": action,
        "request": request,
    });
    format!("persona audit: {line}")
}

fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(bytes)
}

/// The middleware of a route that needs `role` (`None`: any valid token):
/// 401 without a known token, 403 with one that lacks the role; else the
/// [`Caller`] goes into the request's extensions.
pub async fn require(
    State((auth, role)): State<(Arc<Auth>, Option<Role>)>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let Some(token) = auth.token(authorization) else {
        let body = json!({"error": {"code": "unauthorized",
            "message": "this endpoint needs a valid bearer token (Authorization: Bearer TOKEN)"}});
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(body),
        )
            .into_response();
    };
    if let Some(role) = role {
        if !token.roles.contains(&role) {
            let body = json!({"error": {"code": "forbidden",
                "message": format!("the token {:?} lacks the role {role:?}", &*token.caller.name)}});
            return (StatusCode::FORBIDDEN, Json(body)).into_response();
        }
    }
    request.extensions_mut().insert(token.caller.clone());
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_by_hash_only() {
        let config = AuthConfig {
            tokens: vec![TokenConfig {
                name: "shop".into(),
                // printf %s secret-token | sha256sum
                sha256: "0c1e6da8d9c55b9b8e6d9c8a6d0a3c1c0ba2a6f3a4f4b5e8fe1ab8e3b7f1c1a4".into(),
                roles: vec![Role::ReadRecommendations],
                hide_profile_fields: vec![],
            }],
            tokens_file: None,
            audit_log: None,
        };
        let auth = Auth::new(&config).unwrap();
        assert!(auth.token(Some("Bearer secret-token")).is_none());
        let hash = Sha256::digest(b"secret-token");
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        let config = AuthConfig {
            tokens: vec![TokenConfig {
                sha256: hex,
                ..config.tokens[0].clone()
            }],
            ..config
        };
        let auth = Auth::new(&config).unwrap();
        assert_eq!(
            &*auth.token(Some("Bearer secret-token")).unwrap().caller.name,
            "shop"
        );
        assert_eq!(
            &*auth.token(Some("bearer secret-token")).unwrap().caller.name,
            "shop"
        );
        assert!(auth.token(Some("Basic secret-token")).is_none());
        assert!(auth.token(Some("Bearer secret-tokens")).is_none());
        assert!(auth.token(Some("secret-token")).is_none());
        assert!(auth.token(None).is_none());
        let bad = AuthConfig {
            tokens: vec![TokenConfig {
                sha256: "xyz".into(),
                ..config.tokens[0].clone()
            }],
            ..config
        };
        assert!(Auth::new(&bad).is_err());
    }
}
