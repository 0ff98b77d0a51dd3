"""Secrets as they show up in what flannel-bot reads, and look-alikes that must stay readable.

Why: redaction is only as good as the formats it was tried on. Every secret here is either a
provider's documented example (AWS's AKIAIOSFODNN7EXAMPLE, jwt.io's token, kubeadm's
abcdef.0123456789abcdef, Slack's webhook placeholder) or a synthetic value of the right shape; none
is real. Each sits in the context it is met in (a kubeconfig, an env file, a flag, a JSON log line,
a journal), and `leaks` names the fragments that must not survive redaction. The look-alikes are
what a flannel incident is made of (node and pod names, addresses, digests, flannel's own log
lines) and must come out unchanged. `bench/redaction_corpus.py` prints the figures;
tests/unit/test_redaction.py holds them at every secret caught and no look-alike touched.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Secret:
    kind: str
    text: str
    leaks: tuple[str, ...]  # fragments of the secret that must not be in the redacted text


@dataclass(frozen=True)
class LookAlike:
    kind: str
    text: str  # must come out of redaction unchanged


def _b64(label: str, length: int) -> str:
    """Base64-looking synthetic key material: deterministic, and no key of anything."""
    raw = b"".join(hashlib.sha256(f"{label}{i}".encode()).digest() for i in range(length // 32 + 2))
    return base64.b64encode(raw).decode()[:length]


def _hex(label: str, length: int) -> str:
    return "".join(hashlib.sha256(f"{label}{i}".encode()).hexdigest() for i in range(4))[:length]


def _alnum(label: str, length: int) -> str:
    return "".join(c for c in _b64(label, length * 2) if c.isalnum())[:length]


def _pem(kind: str, lines: int = 4) -> tuple[str, tuple[str, ...]]:
    body = [_b64(f"{kind}{i}", 64) for i in range(lines)]
    text = f"-----BEGIN {kind}-----\n" + "\n".join(body) + f"\n-----END {kind}-----"
    return text, tuple(body)


AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example access key id
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # and its secret access key
AWS_SESSION = "FwoGZXIvYXdzEXAMPLE" + _b64("aws-session", 120)
JWT = (  # jwt.io's example token
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0"
    "IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
SA_JWT = (  # the shape of a Kubernetes service account token (RS256, kid)
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IkVYQU1QTEUifQ."
    + _b64("sa-claims", 300).replace("+", "-").replace("/", "_")
    + "."
    + _b64("sa-sig", 342).replace("+", "-").replace("/", "_")
)
BOOTSTRAP = "abcdef.0123456789abcdef"  # kubeadm's documented example bootstrap token
BOOTSTRAP_2 = "07401b.f395accd246ae52d"
K3S_TOKEN = f"K10{_hex('k3s-ca', 64)}::server:{_hex('k3s-pw', 32)}"
SLACK_BOT = "xoxb-000000000000-0000000000000-EXAMPLEexample0000EXAMPLE"
SLACK_USER = "xoxp-000000000000-000000000000-000000000000-EXAMPLEexampleEXAMPLE00000000"
SLACK_APP = "xapp-1-A00EXAMPLE0-0000000000000-" + _hex("xapp", 64)
SLACK_ROTATING = "xoxe.xoxp-1-Mi0yLTAwMDAwMDAwMDAwMC1FWEFNUExFLUVYQU1QTEU" + _alnum("xoxe", 40)
SLACK_REFRESH = "xoxe-1-My0xLTAwMDAwMDAwMDAwMC1FWEFNUExFLUVYQU1QTEU" + _alnum("refresh", 40)
SLACK_WEBHOOK = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
GITHUB_PAT = "ghp_" + _alnum("ghp", 36)
GITHUB_FINE = "github_pat_11EXAMPLE0" + _alnum("pat-a", 12) + "_" + _alnum("pat-b", 59)
GITHUB_APP = "ghs_" + _alnum("ghs", 36)
GITLAB = "glpat-" + _alnum("glpat", 20)
GOOGLE_API = "AIzaSyEXAMPLE" + _alnum("gapi", 26)
VAULT = "hvs.CAESI" + _alnum("vault", 90)
OPENSHIFT = "sha256~" + _alnum("ocp", 43)
PASSWORD = "Example-Passw0rd!"
WG_KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="  # wg-quick(8)'s example private key
WG_PSK = _b64("wg-psk", 43) + "="
BASIC = base64.b64encode(b"admin:" + PASSWORD.encode()).decode()
CERT_DATA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n" + _b64("crt", 600).encode()).decode()
CA_DATA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n" + _b64("ca", 600).encode()).decode()
KEY_DATA = base64.b64encode(
    b"-----BEGIN RSA PRIVATE KEY-----\n" + _b64("key-data", 600).encode()
).decode()

RSA, RSA_BODY = _pem("RSA PRIVATE KEY")
EC, EC_BODY = _pem("EC PRIVATE KEY", 3)
OPENSSH, OPENSSH_BODY = _pem("OPENSSH PRIVATE KEY", 5)
PKCS8, PKCS8_BODY = _pem("PRIVATE KEY")
ENCRYPTED, ENCRYPTED_BODY = _pem("ENCRYPTED PRIVATE KEY")
DSA, DSA_BODY = _pem("DSA PRIVATE KEY")
PGP, PGP_BODY = _pem("PGP PRIVATE KEY BLOCK", 3)
CERT, _ = _pem("CERTIFICATE")


def _journal(text: str, prefix: str = "Nov 21 12:00:01 w2 kubelet[812]: ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


SECRETS: tuple[Secret, ...] = (
    # AWS
    Secret("aws", f"aws_access_key_id = {AWS_KEY_ID}", (AWS_KEY_ID,)),
    Secret("aws", f"aws_secret_access_key = {AWS_SECRET}", (AWS_SECRET,)),
    Secret("aws", f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", (AWS_SECRET,)),
    Secret("aws", f"AWS_SESSION_TOKEN={AWS_SESSION}", (AWS_SESSION[:40],)),
    Secret("aws", f'level=info msg="assumed role" key={AWS_KEY_ID}', (AWS_KEY_ID,)),
    Secret(
        "aws",
        f'{{"Credentials": {{"AccessKeyId": "ASIAIOSFODNN7EXAMPLE", "SecretAccessKey": '
        f'"{AWS_SECRET}", "SessionToken": "{AWS_SESSION}"}}}}',
        ("ASIAIOSFODNN7EXAMPLE", AWS_SECRET, AWS_SESSION[:40]),
    ),
    # kubeconfig
    Secret("kubeconfig", f"    client-key-data: {KEY_DATA}", (KEY_DATA[:40],)),
    Secret("kubeconfig", f"    client-certificate-data: {CERT_DATA}", (CERT_DATA[:40],)),
    Secret("kubeconfig", f"- name: flannel\n  user:\n    token: {SA_JWT}", (SA_JWT[:60],)),
    Secret("kubeconfig", f"users:\n- name: admin\n  user:\n    token: {BOOTSTRAP}", (BOOTSTRAP,)),
    Secret("kubeconfig", f"    username: admin\n    password: {PASSWORD}", (PASSWORD,)),
    Secret(
        "kubeconfig",
        f"      config:\n        client-secret: {_alnum('oidc', 32)}\n"
        f"        id-token: {JWT}\n        refresh-token: {_alnum('rt', 40)}",
        (_alnum("oidc", 32), JWT[:40], _alnum("rt", 40)),
    ),
    Secret("kubeconfig", f"data:\n  tls.key: {KEY_DATA}", (KEY_DATA[:40],)),
    # environment variables and config files
    Secret("env", f"POSTGRES_PASSWORD={PASSWORD}", (PASSWORD,)),
    Secret("env", f"export GITHUB_TOKEN={GITHUB_PAT}", (GITHUB_PAT,)),
    Secret("env", f"CLIENT_SECRET='{_alnum('client', 32)}'", (_alnum("client", 32),)),
    Secret("env", f"      MYSQL_ROOT_PASSWORD: {PASSWORD}", (PASSWORD,)),
    Secret("env", f"K3S_TOKEN={K3S_TOKEN}", (K3S_TOKEN[:30], K3S_TOKEN[-32:])),
    Secret("env", f"VAULT_TOKEN={VAULT}", (VAULT,)),
    Secret("env", f'FLANNELD_ETCD_PASSWORD="{PASSWORD}"', (PASSWORD,)),
    Secret("env", f'db_password = "{PASSWORD}"', (PASSWORD,)),
    Secret(
        "flag",
        f"flanneld --etcd-endpoints=https://10.0.0.5:2379 --etcd-password={PASSWORD}",
        (PASSWORD,),
    ),
    Secret(
        "flag",
        f"kubeadm join 10.0.0.1:6443 --token {BOOTSTRAP} --discovery-token-ca-cert-hash "
        f"sha256:{_hex('ca', 64)}",
        (BOOTSTRAP,),
    ),
    Secret("flag", f"mysql --user=root --password {PASSWORD} -h db", (PASSWORD,)),
    Secret(
        "flag",
        f"I1121 12:00:01.000000       1 main.go:211] CLI flags config: {{etcdEndpoints:"
        f"https://10.0.0.5:2379 etcdPrefix:/coreos.com/network etcdUsername:flannel "
        f"etcdPassword:{PASSWORD} version:false kubeSubnetMgr:false}}",
        (PASSWORD,),
    ),
    # JSON-quoted keys
    Secret("json", f'{{"username": "admin", "password": "{PASSWORD}"}}', (PASSWORD,)),
    Secret("json", f'{{"token": "{_alnum("json-token", 40)}"}}', (_alnum("json-token", 40),)),
    Secret(
        "json",
        f'{{"access_token":"ya29.{_alnum("ya29", 60)}","refresh_token":"1//{_alnum("r1", 40)}"}}',
        (_alnum("ya29", 60), _alnum("r1", 40)),
    ),
    Secret("json", f'{{"client_secret": "{_alnum("cs", 35)}"}}', (_alnum("cs", 35),)),
    Secret("json", f'{{"apiKey":"{_alnum("apikey", 32)}"}}', (_alnum("apikey", 32),)),
    Secret(
        "json",
        f'{{"auths":{{"registry.example.com":{{"auth":"{BASIC}"}}}}}}',
        (BASIC,),
    ),
    Secret(
        "json",
        f'time="2026-11-21T12:00:00Z" level=debug msg="request body: '
        f'{{\\"user\\":\\"ci\\",\\"password\\":\\"{PASSWORD}\\"}}"',
        (PASSWORD,),
    ),
    Secret("json", f"{{'user': 'ci', 'password': '{PASSWORD}'}}", (PASSWORD,)),
    Secret(
        "json",
        f'{{"name": "DB_PASSWORD", "value": "{PASSWORD}"}}',
        (PASSWORD,),
    ),
    # HTTP authentication
    Secret("http", f"Authorization: Basic {BASIC}", (BASIC,)),
    Secret("http", f"curl -H 'Authorization: Basic {BASIC}' https://registry/v2/", (BASIC,)),
    Secret("http", f"https://admin:{PASSWORD}@registry.example.com/v2/", (PASSWORD,)),
    Secret("http", f"postgres://app:{PASSWORD}@db.internal:5432/app", (PASSWORD,)),
    Secret("http", f"--etcd-endpoints=https://root:{PASSWORD}@10.0.0.5:2379", (PASSWORD,)),
    Secret("http", f"curl -u admin:{PASSWORD} https://10.0.0.1:6443/version", (PASSWORD,)),
    Secret("http", f"Authorization: Bearer {SA_JWT}", (SA_JWT[:60],)),
    Secret("http", f"Authorization: Bearer {OPENSHIFT}", (OPENSHIFT,)),
    Secret(
        "http", f'curl -H "Authorization: token {GITHUB_PAT}" https://api.github.com', (GITHUB_PAT,)
    ),
    Secret(
        "http", f"GET /api/v1/nodes?access_token={_alnum('qs', 32)}&watch=1", (_alnum("qs", 32),)
    ),
    Secret("http", f"using bearer {OPENSHIFT} for the API", (OPENSHIFT,)),
    Secret("http", f"X-Api-Key: {_alnum('xkey', 32)}", (_alnum("xkey", 32),)),
    # Slack
    Secret("slack", f"SLACK_BOT_TOKEN={SLACK_BOT}", (SLACK_BOT,)),
    Secret("slack", f"bot token {SLACK_BOT} rejected", (SLACK_BOT,)),
    Secret("slack", f"user token {SLACK_USER}", (SLACK_USER,)),
    Secret("slack", f"app-level token {SLACK_APP}", (SLACK_APP,)),
    Secret("slack", f"legacy xoxa-2-{_alnum('xoxa', 40)}", (_alnum("xoxa", 40),)),
    Secret("slack", f"xoxr-{_alnum('xoxr', 48)}", (_alnum("xoxr", 48),)),
    Secret("slack", f"rotated to {SLACK_ROTATING}", (SLACK_ROTATING[12:],)),
    Secret("slack", f"refresh {SLACK_REFRESH}", (SLACK_REFRESH[8:],)),
    Secret("slack", f"posting to {SLACK_WEBHOOK}", ("XXXXXXXXXXXXXXXXXXXXXXXX", "B00000000")),
    # WireGuard (flannel's wireguard backend) and the rest
    Secret("wireguard", f"[Interface]\nPrivateKey = {WG_KEY}\nListenPort = 51820", (WG_KEY,)),
    Secret("wireguard", f"[Peer]\nPresharedKey = {WG_PSK}", (WG_PSK,)),
    Secret(
        "wireguard",
        f'{{"Network": "10.244.0.0/16", "Backend": {{"Type": "wireguard", "PSK": "{WG_PSK}"}}}}',
        (WG_PSK,),
    ),
    Secret(
        "azure",
        f"DefaultEndpointsProtocol=https;AccountName=example;AccountKey={_b64('az', 86)}==;",
        (_b64("az", 86),),
    ),
    Secret("http", f"Cookie: session={_alnum('cookie', 32)}; theme=dark", (_alnum("cookie", 32),)),
    Secret("npm", f"publish with npm_{_alnum('npm', 36)}", (_alnum("npm", 36),)),
    Secret("stripe", f"charge with sk_live_{_alnum('stripe', 24)}", (_alnum("stripe", 24),)),
    # private keys
    Secret("pem", RSA, RSA_BODY),
    Secret("pem", EC, EC_BODY),
    Secret("pem", OPENSSH, OPENSSH_BODY),
    Secret("pem", PKCS8, PKCS8_BODY),
    Secret("pem", ENCRYPTED, ENCRYPTED_BODY),
    Secret("pem", DSA, DSA_BODY),
    Secret("pem", PGP, PGP_BODY),
    Secret("pem", _journal(RSA), RSA_BODY),
    Secret("pem", "\n".join(RSA.splitlines()[2:]), RSA_BODY[1:]),  # the tail of a cut log
    Secret("pem", RSA.rsplit("\n", 2)[0], RSA_BODY[:-1]),  # cut before its END line
    Secret("pem", f"cat: {RSA} : permission denied", RSA_BODY),
    # tokens of known shapes
    Secret("github", f"remote: {GITHUB_PAT}", (GITHUB_PAT,)),
    Secret("github", f"GH_TOKEN {GITHUB_FINE}", (GITHUB_FINE,)),
    Secret("github", f"installation token {GITHUB_APP} expires 2026-11-21", (GITHUB_APP,)),
    Secret("gitlab", f"registry login {GITLAB}", (GITLAB,)),
    Secret("google", f"maps key {GOOGLE_API}", (GOOGLE_API,)),
    Secret(
        "gcp",
        '{\n  "type": "service_account",\n  "project_id": "example-project",\n'
        f'  "private_key_id": "{_hex("gcp-id", 40)}",\n'
        f'  "private_key": "{PKCS8.replace(chr(10), chr(92) + "n")}\\n",\n'
        '  "client_email": "flannel@example-project.iam.gserviceaccount.com"\n}',
        (_hex("gcp-id", 40), *PKCS8_BODY),
    ),
    Secret("jwt", f"E1121 authentication failed for token {JWT}", (JWT[:50], JWT[-20:])),
    Secret("jwt", f"projected token {SA_JWT[:120]}", (SA_JWT[40:100],)),
    Secret("bootstrap", f"TOKEN                     TTL\n{BOOTSTRAP}   23h", (BOOTSTRAP,)),
    Secret("bootstrap", f"[bootstrap-token] Using token: {BOOTSTRAP_2}", (BOOTSTRAP_2,)),
    Secret("bootstrap", f"--discovery-token {BOOTSTRAP_2}", (BOOTSTRAP_2,)),
)

IMAGE_DIGEST = "sha256:" + _hex("image", 64)
LOOK_ALIKES: tuple[LookAlike, ...] = (
    LookAlike("node", "w2"),
    LookAlike("node", "worker"),
    LookAlike("node", "ip-10-0-1-23.ec2.internal"),
    LookAlike("node", "gke-prod-default-pool-3f8a1b2c-x7k2"),
    LookAlike("node", "k3s-server-0 Ready control-plane,master 12d v1.29.4+k3s1"),
    LookAlike("address", "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink"),
    LookAlike("address", "inet 192.168.56.11/24 brd 192.168.56.255 scope global eth1"),
    LookAlike("address", "inet6 fe80::5c1e:9dff:fe2a:1b3c/64 scope link"),
    LookAlike("address", "https://10.96.0.1:443/api/v1/nodes?limit=500"),
    LookAlike("address", "https://[fd00::1]:6443/healthz"),
    LookAlike("address", "ssh://root@192.168.56.11:22"),
    LookAlike("address", "git@github.com:flannel-io/flannel.git"),
    LookAlike("config", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24"),
    LookAlike("config", "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true"),
    LookAlike("config", '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'),
    LookAlike("config", "net.bridge.bridge-nf-call-iptables = 1"),
    LookAlike("config", "PASSWORD_FILE=/run/secrets/db-password"),
    LookAlike("config", "TOKEN_TTL=24h0m0s"),
    LookAlike("config", "DISABLE_PASSWORD_AUTH=true"),
    LookAlike("config", 'private_key = "~/.ssh/flannel-bot"'),
    LookAlike(
        "config",
        f"interface: flannel-wg\n  public key: {_b64('wg-pub', 43)}=\n  private key: (hidden)\n"
        "  listening port: 51820",
    ),
    LookAlike("config", '{"Backend": {"Type": "wireguard", "PSK": ""}}'),
    LookAlike("config", "    certificate-authority-data: " + CA_DATA[:200]),
    LookAlike("config", "    client-key: /etc/kubernetes/pki/admin.key"),
    LookAlike("config", "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token"),
    LookAlike("config", "  automountServiceAccountToken: false"),
    LookAlike("config", "      secretName: flannel-token-x7k2p"),
    LookAlike("config", "  serviceAccountName: flannel"),
    LookAlike("config", "--etcd-keyfile=/etc/ssl/etcd/key.pem --etcd-certfile=/etc/ssl/etcd/c.pem"),
    LookAlike("config", "--service-account-private-key-file=/etc/kubernetes/pki/sa.key"),
    LookAlike("config", f"--discovery-token-ca-cert-hash sha256:{_hex('ca', 64)}"),
    LookAlike("config", 'password: ""'),
    LookAlike("config", "PGPASSWORD=$DB_PASSWORD psql -h db"),
    LookAlike("digest", f"docker.io/flannel/flannel:v0.26.1@{IMAGE_DIGEST}"),
    LookAlike("digest", f"containerID: containerd://{_hex('ctr', 64)}"),
    LookAlike("digest", f"plan sha256:{_hex('plan', 64)} (approve 12 plan={_hex('plan', 12)})"),
    LookAlike("digest", f"audit chain OK: 4112 events, head {_hex('head', 64)}"),
    LookAlike("digest", "uid: c0ffee00-1234-4abc-8def-0123456789ab"),
    LookAlike("pod", "kube-flannel-ds-x7k2p   0/1   CrashLoopBackOff   7   12m"),
    LookAlike("pod", "coredns-5d78c9869d-abcde"),
    LookAlike("pod", "token-refresher-7d9f8c6b5-x2x9z"),
    LookAlike("event", "worker.17c8e6b5f4a3d2e1"),
    LookAlike("event", "Successfully assigned kube-flannel/kube-flannel-ds-x7k2p to w2"),
    LookAlike(
        "event",
        'MountVolume.SetUp failed for volume "flannel-token-x7k2p" : secret '
        '"flannel-token-x7k2p" not found',
    ),
    LookAlike("public", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + _b64("pub", 43) + " bot@ops"),
    LookAlike("public", CERT),
    LookAlike("slack", "<@UALICE> asked: `/flannel diagnose`"),
    LookAlike("slack", "thread 1700000000.000100 in C0123ABCD"),
    LookAlike(
        "flannel",
        "I1121 12:00:01.000000       1 main.go:211] CLI flags config: {etcdEndpoints:"
        "http://127.0.0.1:4001,http://127.0.0.1:2379 etcdPrefix:/coreos.com/network "
        "etcdKeyfile: etcdCertfile: etcdCAFile: etcdUsername: etcdPassword: version:false "
        "kubeSubnetMgr:true kubeApiUrl: kubeAnnotationPrefix:flannel.alpha.coreos.com}",
    ),
    LookAlike(
        "flannel",
        "E1121 12:00:01.000000       1 main.go:333] Failed to create SubnetManager: unable to "
        "initialize inclusterconfig: open /var/run/secrets/kubernetes.io/serviceaccount/token: "
        "no such file or directory",
    ),
    LookAlike(
        "flannel",
        "E1121 12:00:01.000000       1 main.go:330] Error registering network: failed to "
        'acquire lease: node "w2" pod cidr not assigned',
    ),
    LookAlike(
        "flannel",
        "E1121 reflector.go:138] failed to list *v1.Node: Unauthorized: invalid bearer token",
    ),
    LookAlike(
        "flannel",
        "E1121 kube.go:470] error creating token: timed out waiting for the condition",
    ),
    LookAlike(
        "flannel",
        'x509: certificate signed by unknown authority (possibly because of "crypto/rsa: '
        'verification error" while trying to verify candidate authority certificate "kubernetes")',
    ),
    LookAlike(
        "flannel",
        "iptables -t nat -A POSTROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "
        '"flanneld masq" -j RETURN',
    ),
    LookAlike(
        "flannel",
        'time="2026-11-21T12:00:00Z" level=info msg="Node token is available at '
        '/var/lib/rancher/k3s/server/token"',
    ),
    LookAlike("flannel", "Authorization header missing from the request"),
    LookAlike("flannel", 'password authentication failed for user "postgres"'),
)
