//! The claims each method's allow rules may name, exposed as `join.*`
//! attributes. The verifiers (`join/<method>.rs`) read them from here.

/// GitHub Actions ID token claims.
pub const GITHUB: &[&str] = &[
    "sub", "repository", "repository_id", "repository_owner", "repository_owner_id", "repository_visibility", "workflow",
    "workflow_ref", "job_workflow_ref", "environment", "actor", "actor_id", "ref", "ref_type", "ref_protected",
    "event_name", "runner_environment", "sha", "run_id", "enterprise",
];

/// GitLab CI ID token claims (`ref_protected` and `environment_protected` are the strings `"true"`/`"false"`, as GitLab sends them).
pub const GITLAB: &[&str] = &[
    "sub", "project_path", "project_id", "namespace_path", "namespace_id", "ref", "ref_type", "ref_protected",
    "ref_path", "environment", "environment_protected", "deployment_tier", "pipeline_source", "pipeline_id",
    "job_id", "user_login", "user_id", "runner_id", "runner_environment", "ci_config_ref_uri", "ci_config_sha",
    "project_visibility", "sha",
];

/// CircleCI OIDC token claims.
pub const CIRCLECI: &[&str] = &["sub", "organization_id", "project_id", "context_id", "vcs_origin", "vcs_ref", "ssh_rerun"];

/// Bitbucket Pipelines OIDC token claims.
pub const BITBUCKET: &[&str] = &[
    "sub", "workspace_uuid", "repository_uuid", "deployment_environment_uuid", "branch_name", "pipeline_uuid", "step_uuid",
    "account_uuid",
];

/// Azure DevOps pipeline ID token claims.
pub const AZURE_DEVOPS: &[&str] = &[
    "sub", "organization_id", "organization_name", "project_id", "project_name", "pipeline_name", "definition_id",
    "repository_id", "repository_uri", "repository_version", "repository_ref", "run_id",
];

/// HCP Terraform workload identity token claims.
pub const TERRAFORM_CLOUD: &[&str] = &[
    "sub", "organization", "organization_id", "project", "project_id", "workspace", "workspace_id", "full_workspace",
    "run_id", "run_phase",
];

/// Spacelift run token claims.
pub const SPACELIFT: &[&str] = &["sub", "space_id", "caller_type", "caller_id", "run_type", "run_id", "scope"];

/// Kubernetes service-account token claims.
pub const KUBERNETES: &[&str] = &["sub", "service_account", "namespace", "service_account_name", "service_account_uid", "pod_name", "pod_uid", "node_name"];

/// GCE instance identity token claims.
pub const GCP: &[&str] = &["project_id", "project_number", "zone", "region", "instance_id", "instance_name", "service_account", "service_account_id"];

/// Azure VM identity (attested document and managed identity token).
pub const AZURE: &[&str] = &["subscription", "resource_group", "vm_id", "vm_name", "tenant_id", "managed_identity"];

/// EC2 instance identity document fields (signed by AWS).
pub const EC2: &[&str] = &["aws_account", "aws_region", "instance_id", "availability_zone", "instance_type", "image_id", "architecture"];
