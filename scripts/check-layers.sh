#!/usr/bin/env bash
# Fails when the crate layering is broken: the agent (and so the `sigil-agent`
# binary) must not link the broker, and sigil-core must link neither.
set -euo pipefail
cd "$(dirname "$0")/.."
agent_deps=$(cargo tree --locked -p sigil-agent --prefix none)
core_deps=$(cargo tree --locked -p sigil-core --prefix none)
fail=0
if grep -q '^sigil-broker ' <<<"$agent_deps"; then
  echo "layering: sigil-agent depends on sigil-broker (cargo tree -p sigil-agent -i sigil-broker shows the path)"; fail=1
fi
if grep -Eq '^sigil-(broker|agent) ' <<<"$core_deps"; then
  echo "layering: sigil-core depends on sigil-broker or sigil-agent"; fail=1
fi
if [ "$fail" = 0 ]; then echo "layering ok: sigil-core <- sigil-broker, sigil-core <- sigil-agent, sigil links both"; fi
exit "$fail"
