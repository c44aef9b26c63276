"""boto3/botocore, the real AWS SDK for Python, prove the local stand-ins speak
the real protocols before Sigil is pointed at them: each test gives the SDK
only the variables it would see on that platform (temporary HOME, no other
AWS_* variable) and checks that the SDK picked that source and that the
credentials it got are the real moto ones the stand-in handed out."""
import urllib.error
import urllib.request

from chain_peers import Aws, allow_unsigned, boto3_caller, sdk_env
from container_standin import Container
from imds_standin import CREDS_PREFIX, Imds


def test_botocore_gets_instance_role_credentials_from_the_imds_standin_over_imdsv2(moto, tmp_path):
    aws = Aws(moto, roles=["ec2-role"])
    creds = aws.assume("ec2-role", "i-standin")
    imds = Imds(credentials=lambda: creds)
    try:
        got = boto3_caller(sdk_env(tmp_path, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url), moto)
        assert got["method"] == "iam-role" and got["access_key"] == creds["AccessKeyId"], got
        assert got["arn"] == "arn:aws:sts::123456789012:assumed-role/ec2-role/i-standin"
        assert imds.count("PUT", "/latest/api/token") >= 1, "botocore asked for an IMDSv2 session token"
        assert imds.count("GET", CREDS_PREFIX + imds.role) >= 1
        # Without a token the stand-in refuses, as IMDSv2-only instances do.
        try:
            urllib.request.urlopen(imds.url + CREDS_PREFIX, timeout=5)
            raise AssertionError("an IMDSv1 GET was answered")
        except urllib.error.HTTPError as e:
            assert e.code == 401
    finally:
        imds.close()


def test_botocore_gets_container_credentials_with_the_authorization_token_file(moto, tmp_path):
    aws = Aws(moto, roles=["task-role"])
    creds = aws.assume("task-role", "ecs-task")
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text("pod-identity-token-value")  # no newline: botocore sends the file verbatim
    ecs = Container(lambda: creds, token="pod-identity-token-value")
    try:
        # The stand-in refuses a request without the token.
        try:
            urllib.request.urlopen(ecs.url, timeout=5)
            raise AssertionError("the stand-in answered without the authorization token")
        except urllib.error.HTTPError as e:
            assert e.code == 401
        assert ecs.count(401) == 1
        env = sdk_env(tmp_path, AWS_CONTAINER_CREDENTIALS_FULL_URI=ecs.url, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=token_file,
                      AWS_EC2_METADATA_DISABLED="true")
        got = boto3_caller(env, moto)
        assert got["method"] == "container-role" and got["access_key"] == creds["AccessKeyId"], got
        assert got["arn"].endswith(":assumed-role/task-role/ecs-task")
        assert ecs.count(200) >= 1 and ecs.count(401) == 1, "botocore sent the token from the file"
    finally:
        ecs.close()


def test_boto3_exchanges_a_web_identity_token_at_motos_sts(moto, tmp_path):
    aws = Aws(moto, roles=["irsa-role"])
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDphZ2VudCJ9.c2ln")
    env = sdk_env(tmp_path, AWS_WEB_IDENTITY_TOKEN_FILE=token, AWS_ROLE_ARN=f"arn:aws:iam::123456789012:role/irsa-role",
                  AWS_ROLE_SESSION_NAME="boto3-irsa", AWS_ENDPOINT_URL_STS=moto, AWS_EC2_METADATA_DISABLED="true")
    allow_unsigned(moto)  # AssumeRoleWithWebIdentity is unsigned
    got = boto3_caller(env, moto)
    assert got["method"] == "assume-role-with-web-identity", got
    assert got["arn"] == "arn:aws:sts::123456789012:assumed-role/irsa-role/boto3-irsa"
    del aws
