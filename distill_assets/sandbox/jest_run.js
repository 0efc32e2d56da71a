// Run jest with its options passed in-process: the tests' process.argv then holds none of them (a CLI library's
// tests that parse process.argv would otherwise see --json and fail). Copied into the sandbox's workspace.
// DISTILL_JEST_FILES: JSON list of test files (empty: the whole suite); DISTILL_JEST_OUT: the JSON report.
"use strict";
const files = JSON.parse(process.env.DISTILL_JEST_FILES || "[]");
let runCLI = null;
for (const name of ["jest", "jest-cli", "@jest/core"]) {
  try {
    runCLI = require(name).runCLI;
  } catch (e) {
    runCLI = null;
  }
  if (runCLI) break;
}
if (!runCLI) {
  console.error("jest is not installed in the environment");
  process.exit(127);
}
const argv = { _: files, $0: "jest", ci: true, json: true, outputFile: process.env.DISTILL_JEST_OUT,
               runTestsByPath: files.length > 0, watchman: false };
process.argv = process.argv.slice(0, 1).concat(["jest"]);
runCLI(argv, [process.cwd()]).then(
  (r) => process.exit(r.results.success ? 0 : 1),
  (e) => { console.error(e && e.stack || e); process.exit(2); });
