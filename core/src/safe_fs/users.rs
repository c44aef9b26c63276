//! User and group names to ids, from `/etc/passwd` and `/etc/group` (numeric ids
//! are taken as they are). Name services beyond these files are not consulted:
//! write the id for users that only exist in LDAP and the like.

/// A name that is in neither file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserError {
    /// No such user or group.
    #[error("no {kind} named {name:?} in {file} (give the name of a local {kind} or a numeric id)")]
    Unknown {
        /// `user` or `group`.
        kind: &'static str,
        /// The name.
        name: String,
        /// The file searched.
        file: &'static str,
    },
}

/// The id (third field) of `name` in passwd- or group-formatted `text`.
pub fn lookup(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(name)).then(|| f.nth(1).and_then(|id| id.parse().ok())).flatten()
    })
}

fn resolve(spec: &str, kind: &'static str, file: &'static str) -> Result<u32, UserError> {
    if let Ok(id) = spec.parse::<u32>() {
        return Ok(id);
    }
    let text = std::fs::read_to_string(file).unwrap_or_default();
    lookup(&text, spec).ok_or_else(|| UserError::Unknown { kind, name: spec.to_string(), file })
}

/// A user name or numeric uid.
pub fn uid(spec: &str) -> Result<u32, UserError> {
    resolve(spec, "user", "/etc/passwd")
}

/// A group name or numeric gid.
pub fn gid(spec: &str) -> Result<u32, UserError> {
    resolve(spec, "group", "/etc/group")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_their_ids_and_numbers_pass_through() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\napp:x:1000:1000::/home/app:/bin/sh\n";
        assert_eq!(lookup(passwd, "app"), Some(1000));
        assert_eq!(lookup(passwd, "ap"), None);
        assert_eq!(lookup("staff:x:50:alice,bob\n", "staff"), Some(50));
        assert_eq!(uid("4242"), Ok(4242));
        assert_eq!(uid("root"), Ok(0));
        assert!(uid("no-such-user-sigil").unwrap_err().to_string().contains("no user named"));
    }
}
