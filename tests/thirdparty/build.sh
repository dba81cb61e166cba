#!/usr/bin/env bash
# Rebuild the vendored third-party WHIP / WHEP clients of this folder from npm (see README.md).
# Needs node and npm; writes only into this folder. Usage: bash tests/thirdparty/build.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
cat > package.json <<'JSON'
{"name": "mouthpiece-thirdparty-build", "private": true, "version": "0.0.0"}
JSON
npm install --no-audit --no-fund --save-exact \
  @eyevinn/webrtc-player@0.13.0 @eyevinn/whip-web-client@1.1.7 whip-whep@1.2.0 esbuild@0.25.0
echo 'export { WebRTCPlayer, ListAvailableAdapters } from "@eyevinn/webrtc-player";' > webrtc-player.js
echo 'export { WHIPClient } from "@eyevinn/whip-web-client";' > whip-web-client.js
common=(--bundle --format=iife --platform=browser --target=es2020 --legal-comments=inline)
npx esbuild webrtc-player.js "${common[@]}" --global-name=EyevinnWebRTCPlayer \
  --metafile=webrtc-player.meta.json --outfile="$here/eyevinn-webrtc-player-0.13.0.js"
npx esbuild whip-web-client.js "${common[@]}" --global-name=EyevinnWHIPClient \
  --metafile=whip-web-client.meta.json --outfile="$here/eyevinn-whip-web-client-1.1.7.js"
# whip-whep ships plain ES modules without dependencies: vendored as published
mkdir -p "$here/whip-whep-1.2.0"
cp node_modules/whip-whep/whep.js node_modules/whip-whep/whip.js "$here/whip-whep-1.2.0/"
# the licence of every package in a bundle, named package@version
rm -rf "$here/licenses" && mkdir -p "$here/licenses"
node -e '
const fs = require("fs"), path = require("path");
const dirs = new Set();
for (const meta of ["webrtc-player.meta.json", "whip-web-client.meta.json"])
  for (const input of Object.keys(JSON.parse(fs.readFileSync(meta)).inputs)) {
    const m = input.match(/^(.*node_modules\/(@[^/]+\/)?[^/]+)\//);
    if (m) dirs.add(m[1]);
  }
dirs.add("node_modules/whip-whep");
for (const dir of [...dirs].sort()) {
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json")));
  const file = fs.readdirSync(dir).find((f) => /^(licen[sc]e|copying)/i.test(f));
  const name = `${pkg.name.replace("/", "__")}@${pkg.version}.${pkg.license}.txt`;
  const out = path.join(process.argv[1], "licenses", name);
  if (file) fs.copyFileSync(path.join(dir, file), out);
  else  // e.g. mitt 2.1.0: the package declares its licence but ships no licence file
    fs.writeFileSync(out, `${pkg.name}@${pkg.version}: licence ${pkg.license}, as declared in its ` +
      `package.json (the npm package ships no licence file); author: ${JSON.stringify(pkg.author)}; ` +
      `repository: ${JSON.stringify(pkg.repository)}\n`);
  console.log(`${pkg.name}@${pkg.version} (${pkg.license})`);
}' "$here"
# the exact tree that was installed: package@version and its npm integrity hash
node -e '
const lock = JSON.parse(require("fs").readFileSync("package-lock.json"));
const lines = Object.entries(lock.packages).filter(([p]) => p && !p.includes("@esbuild/")).map(([p, v]) =>
  `${p.replace(/^.*node_modules\//, "")}@${v.version} ${v.integrity}${p.endsWith("esbuild") ? " (build only)" : ""}`);
require("fs").writeFileSync(process.argv[1], [...new Set(lines)].sort().join("\n") + "\n");' "$here/VERSIONS.txt"
