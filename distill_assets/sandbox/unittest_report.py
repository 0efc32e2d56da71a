"""Run unittest and write a structured report: ``python unittest_report.py OUT.json [unittest arguments]``.

Copied into the sandbox's workspace and run by the environment's interpreter (no dependency beyond the standard
library, Python 3.6+). Test ids are file-qualified (``tests/test_x.py::Case::test_y``); a module that cannot be
imported (unittest's ``_FailedTest``) is ``<file>::<collection>`` with outcome ``error``.
"""

import json
import os
import sys
import unittest


def _file_of(module_name):
    mod = sys.modules.get(module_name)
    path = getattr(mod, "__file__", None) if mod else None
    if not path:
        return module_name.replace(".", "/") + ".py"
    return os.path.relpath(os.path.abspath(path), os.getcwd()).replace(os.sep, "/")


def _id(test):
    cls = type(test)
    if cls.__name__ == "_FailedTest" or cls.__module__.startswith("unittest.loader"):
        name = test.id().rsplit(".", 1)[-1] if "." in test.id() else test.id()
        target = test.id().split("_FailedTest.", 1)[-1] if "_FailedTest." in test.id() else name
        return target.replace(".", "/") + ".py::<collection>", True
    method = getattr(test, "_testMethodName", test.id().rsplit(".", 1)[-1])
    return "%s::%s::%s" % (_file_of(cls.__module__), cls.__qualname__, method), False


class _Result(unittest.TextTestResult):
    outcomes = {}

    def _put(self, test, outcome):
        tid, failed_import = _id(test)
        self.outcomes[tid] = "error" if failed_import else outcome

    def addSuccess(self, test):
        super().addSuccess(test)
        self._put(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._put(test, "failed")

    def addError(self, test, err):
        super().addError(test, err)
        self._put(test, "error")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._put(test, "skipped")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._put(test, "passed")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._put(test, "failed")


def main():
    out = sys.argv[1]
    sys.path.insert(0, os.getcwd())
    runner = unittest.TextTestRunner(resultclass=_Result, verbosity=1)
    prog = unittest.main(module=None, argv=["unittest"] + sys.argv[2:], testRunner=runner, exit=False)
    with open(out, "w") as fh:
        json.dump({"tests": _Result.outcomes}, fh)
    sys.exit(0 if prog.result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
