//! The fixed list of sigil.v1 RPCs a metric may be labelled with. A request
//! path outside it (anyone can send one) counts as `unknown`: a caller never
//! chooses a label value, so the label set stays bounded.

/// The gRPC service path prefix.
pub const SERVICE_PREFIX: &str = "/sigil.v1.Sigil/";

/// Every RPC of `sigil.v1.Sigil`, in proto order.
pub const RPCS: [&str; 45] = [
    "CreateRole",
    "GetRole",
    "ListRoles",
    "UpdateRole",
    "DeleteRole",
    "CreateBot",
    "GetBot",
    "ListBots",
    "UpdateBot",
    "DeleteBot",
    "CreateJoinToken",
    "GetJoinToken",
    "ListJoinTokens",
    "UpdateJoinToken",
    "DeleteJoinToken",
    "CreateWorkloadIdentity",
    "GetWorkloadIdentity",
    "ListWorkloadIdentities",
    "UpdateWorkloadIdentity",
    "DeleteWorkloadIdentity",
    "BeginJoin",
    "Join",
    "RenewIdentity",
    "IssueX509Svid",
    "IssueJwtSvid",
    "BatchIssueSvids",
    "GetTrustBundle",
    "ListAuditEvents",
    "WhoAmI",
    "Heartbeat",
    "ListBotInstances",
    "GetBotInstance",
    "ListInstanceBindings",
    "ReleaseInstanceBinding",
    "CreateLock",
    "GetLock",
    "ListLocks",
    "DeleteLock",
    "GetCaStatus",
    "RotateCa",
    "RevokeSvids",
    "IssueSshCertificate",
    "GetSshCaPublicKeys",
    "IssueTlsCertificate",
    "Apply",
];

/// Index of the `unknown` slot (one past the RPCs).
pub const UNKNOWN: usize = RPCS.len();

/// Label of a slot.
pub fn name(i: usize) -> &'static str {
    RPCS.get(i).copied().unwrap_or("unknown")
}

/// The slot of a request path.
pub fn of_path(path: &str) -> usize {
    path.strip_prefix(SERVICE_PREFIX).and_then(|m| RPCS.iter().position(|r| *r == m)).unwrap_or(UNKNOWN)
}

/// gRPC status code names, by number (0..=16).
pub const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The slot of a `grpc-status` value; anything else counts as UNKNOWN (2).
pub fn code_of(value: Option<&[u8]>) -> usize {
    match value {
        None => 0,
        Some(v) => std::str::from_utf8(v).ok().and_then(|s| s.parse::<usize>().ok()).filter(|c| *c < CODES.len()).unwrap_or(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_matches_the_proto_service() {
        let proto = include_str!("../../../schemas/proto/sigil/v1/sigil.proto");
        let declared: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .map(|l| l.split(|c: char| c == '(' || c.is_whitespace()).next().unwrap_or_default())
            .collect();
        assert_eq!(declared, RPCS.to_vec());
    }

    #[test]
    fn a_caller_supplied_path_never_becomes_a_label() {
        assert_eq!(name(of_path("/sigil.v1.Sigil/WhoAmI")), "WhoAmI");
        assert_eq!(name(of_path("/sigil.v1.Sigil/Anything\"else")), "unknown");
        assert_eq!(name(of_path("/other.Service/WhoAmI")), "unknown");
        assert_eq!(code_of(None), 0);
        assert_eq!(code_of(Some(b"16")), 16);
        assert_eq!(code_of(Some(b"99")), 2);
    }
}
