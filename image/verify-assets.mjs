#!/usr/bin/env node
// Checks the committed guest image: every file named in assets/manifest.json `files`
// must exist with exactly that size and sha256. Plain Node, no dependencies; CI runs it
// (the image itself is never rebuilt in CI). Exit 0 = all match, 1 = mismatch.
//   node image/verify-assets.mjs [assets-dir]
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { brotliDecompressSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const dir = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), "..", "assets"));
const manifestPath = join(dir, "manifest.json");
const problems = [];

let manifest;
try {
  manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
} catch (error) {
  console.error(`verify-assets: cannot read ${manifestPath}: ${error.message}`);
  process.exit(1);
}
if (manifest.format !== 1) problems.push(`manifest format is ${manifest.format}, expected 1`);
const files = manifest.files ?? {};
if (Object.keys(files).length === 0) problems.push("manifest.json lists no files");
for (const key of ["kernel", "bios", "vgaBios"]) {
  if (!(key in files)) problems.push(`manifest.json has no files.${key}`);
}
// The root filesystem is a disk (files.rootfs, v86's hda) or an initramfs (files.initrd).
if (!("rootfs" in files) && !("initrd" in files)) problems.push("manifest.json has neither files.rootfs nor files.initrd");

for (const [key, entry] of Object.entries(files)) {
  const path = join(dir, entry.path ?? "");
  if (!entry.path || !existsSync(path)) {
    problems.push(`files.${key}: ${entry.path ?? "(no path)"} is missing from ${dir}`);
    continue;
  }
  const size = statSync(path).size;
  if (size !== entry.size) problems.push(`files.${key}: ${entry.path} is ${size} bytes, manifest says ${entry.size}`);
  const bytes = readFileSync(path);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  if (sha256 !== entry.sha256) problems.push(`files.${key}: ${entry.path} has sha256 ${sha256}, manifest says ${entry.sha256}`);
  // A brotli-compressed file (the root disk) must also unpack to what the manifest says.
  if (entry.unpacked !== undefined && sha256 === entry.sha256) {
    const disk = brotliDecompressSync(bytes);
    const diskSha256 = createHash("sha256").update(disk).digest("hex");
    if (disk.length !== entry.unpacked.size || diskSha256 !== entry.unpacked.sha256) {
      problems.push(`files.${key}: ${entry.path} unpacks to ${disk.length} bytes with sha256 ${diskSha256}, manifest says ${entry.unpacked.size} / ${entry.unpacked.sha256}`);
    }
  }
  if (!Array.isArray(entry.sources) || entry.sources.length === 0) problems.push(`files.${key}: no sources listed`);
}

if (problems.length > 0) {
  console.error(`verify-assets: ${problems.length} problem(s) in ${dir}:`);
  for (const p of problems) console.error(`  - ${p}`);
  console.error("The files in assets/ must be exactly those image/build.sh wrote with this manifest: rebuild (sudo npm run image:build) or restore them from git.");
  process.exit(1);
}
console.log(`verify-assets: ${Object.keys(files).length} files match manifest.json (${Object.entries(files).map(([k, e]) => `${k} ${e.size} B`).join(", ")})`);
