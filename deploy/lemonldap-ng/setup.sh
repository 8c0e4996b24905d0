#!/usr/bin/env bash
# LemonLDAP::NG 2.16 (Debian 12 package) portal with the OpenID Connect issuer and dynamic
# registration, for trying the gateway by hand (docs/idps.md, "LemonLDAP::NG").
#
#   deploy/lemonldap-ng/setup.sh DIR [LLNG_PORT [GATEWAY_PORT [ADMIN_PORT]]]
#
# Writes into DIR (created): lemonldap-ng.ini, conf/lmConf-1.json (File configuration),
# throwaway RSA keys made for this run, session/cache directories, and gateway.toml for the
# gateway in front. Starts nothing; prints the commands. Loopback only.
set -euo pipefail
DIR=${1:?usage: setup.sh DIR [LLNG_PORT [GATEWAY_PORT [ADMIN_PORT]]]}
LLNG_PORT=${2:-18280}
GW_PORT=${3:-18281}
ADMIN_PORT=${4:-18282}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
mkdir -p "$DIR"/{conf,sessions/lock,psessions/lock,cache,notifications}

# Throwaway signing key pair for this run only (never reuse).
openssl genrsa -out "$DIR/oidc-sig.key" 2048 2>/dev/null
openssl rsa -in "$DIR/oidc-sig.key" -pubout -out "$DIR/oidc-sig.pub" 2>/dev/null

# Portal ini: the package's /etc/lemonldap-ng/lemonldap-ng.ini points at /var/lib; this one
# points at DIR. The portal reads it through LLNG_DEFAULTCONFFILE.
cat > "$DIR/lemonldap-ng.ini" <<INI
[all]
logLevel = notice
checkTime = 1

[configuration]
type = File
dirName = $DIR/conf
prettyPrint = 1

[portal]
staticPrefix = /static
templateDir = /usr/share/lemonldap-ng/portal/templates
languages = en
INI

# lmConf-1.json: the package's sample (Demo authentication) cut down, with the OIDC issuer.
LLNG_DIR="$DIR" LLNG_PORT="$LLNG_PORT" python3 - <<'PY'
import json, os
d, port = os.environ["LLNG_DIR"], os.environ["LLNG_PORT"]
conf = {
    "cfgNum": 1,
    "cfgVersion": "2.16.1",
    "cfgAuthor": "deploy/lemonldap-ng/setup.sh",
    "cfgDate": "1700000000",
    "portal": f"http://127.0.0.1:{port}/",
    "domain": "127.0.0.1",
    "cookieName": "lemonldap",
    "securedCookie": 0,
    "authentication": "Demo",
    "userDB": "Same",
    "passwordDB": "Null",
    "demoExportedVars": {"cn": "cn", "mail": "mail", "uid": "uid"},
    "exportedVars": {},
    "whatToTrace": "uid",
    "timeout": 72000,
    "globalStorage": "Apache::Session::File",
    "globalStorageOptions": {
        "Directory": f"{d}/sessions",
        "LockDirectory": f"{d}/sessions/lock",
        "generateModule": "Lemonldap::NG::Common::Apache::Session::Generate::SHA256",
    },
    "persistentStorage": "Apache::Session::File",
    "persistentStorageOptions": {
        "Directory": f"{d}/psessions",
        "LockDirectory": f"{d}/psessions/lock",
    },
    "localSessionStorage": "Cache::FileCache",
    "localSessionStorageOptions": {
        "cache_root": f"{d}/cache",
        "cache_depth": 3,
        "default_expires_in": 600,
        "directory_umask": "007",
        "namespace": "lemonldap-ng-sessions",
    },
    "notification": 0,
    "loginHistoryEnabled": 0,
    "portalSkin": "bootstrap",
    "reloadUrls": {},
    "locationRules": {},
    "exportedHeaders": {},
    # OpenID Connect issuer + dynamic registration
    "issuerDBOpenIDConnectActivation": 1,
    "oidcServiceAllowDynamicRegistration": 1,
    "oidcServiceMetaDataIssuer": f"http://127.0.0.1:{port}",
    "oidcServicePrivateKeySig": open(f"{d}/oidc-sig.key").read(),
    "oidcServicePublicKeySig": open(f"{d}/oidc-sig.pub").read(),
    "oidcServiceKeyIdSig": "setup-sh-throwaway",
    "oidcServiceIgnoreScopeForClaims": 1,
}
with open(f"{d}/conf/lmConf-1.json", "w") as f:
    json.dump(conf, f, indent=3, sort_keys=True)
PY

# The gateway in front (profile lemonldap-ng: serialize = true, known_drops).
cat > "$DIR/gateway.toml" <<TOML
[listen]
http = ["127.0.0.1:$GW_PORT"]
admin = "127.0.0.1:$ADMIN_PORT"

[upstream]
origins = ["http://127.0.0.1:$LLNG_PORT"]
profile = "lemonldap-ng"

[log]
level = "info"
TOML

cat <<MSG
Written to $DIR. Start the portal (foreground) and the gateway:

  LLNG_DEFAULTCONFFILE=$DIR/lemonldap-ng.ini \\
    plackup -E deployment -s Starman --workers 4 --host 127.0.0.1 --port $LLNG_PORT \\
    /usr/share/lemonldap-ng/portal/htdocs/index.psgi
  target/debug/dcr-gateway check -c $DIR/gateway.toml
  target/debug/dcr-gateway run   -c $DIR/gateway.toml

Portal: http://127.0.0.1:$LLNG_PORT/  gateway: http://127.0.0.1:$GW_PORT/  admin: http://127.0.0.1:$ADMIN_PORT/metrics
Demo users: dwho/dwho, rtyler/rtyler, msmith/msmith.
MSG
