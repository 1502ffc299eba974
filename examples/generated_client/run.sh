#!/bin/sh
# Generate a Python client from a running server's /openapi.json with openapi-python-client,
# then submit an images job through it with typed params (use_client.py).
#   examples/generated_client/run.sh http://127.0.0.1:8000 [API_KEY]
set -eu
server=${1:-http://127.0.0.1:8000}
key=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet openapi-python-client==0.29.1
"$work/venv/bin/python" -c "import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())" \
  "$server/openapi.json" > "$work/openapi.json"
cd "$work"
"$work/venv/bin/openapi-python-client" generate --path openapi.json --config "$here/config.yaml" \
  --meta none --output-path gen_client
PYTHONPATH="$work" "$work/venv/bin/python" "$here/use_client.py" "$server" "$key"
