# Sourced by the RUN steps of docker/*.Dockerfile that download (apt, pip, npm). When the build was given extra CA
# certificates as the BuildKit secret `ca_bundle` (make image CA_BUNDLE=...), every client trusts them for this
# one RUN step: the secret is a tmpfs mount under /run/secrets, so it is never written to a layer.
# Without the secret nothing changes (public CAs from the base image).
if [ -s /run/secrets/ca_bundle ]; then
  export PIP_CERT=/run/secrets/ca_bundle                       # pip (replaces certifi's bundle)
  export SSL_CERT_FILE=/run/secrets/ca_bundle                  # Python's ssl (urllib), curl, OpenSSL clients
  export REQUESTS_CA_BUNDLE=/run/secrets/ca_bundle             # requests
  export NODE_EXTRA_CA_CERTS=/run/secrets/ca_bundle            # node, npm's HTTPS agent (added to its roots)
  export npm_config_cafile=/run/secrets/ca_bundle              # npm registry requests
  export APT_CONFIG=/app/docker/apt-ca.conf                    # apt over https mirrors: Acquire::https::CAInfo
  echo "ca-env.sh: using the ca_bundle build secret for apt, pip and npm"
fi
