"""seigod's config file is checked at start: every bad value is refused with an error that names
the key, and the process exits 1 (seigod --check-config), never echoing a password."""
import os
import subprocess
import tempfile
import unittest

import harness

GOOD = """
[server]
listen = "127.0.0.1:36872"
[shards]
urls = ["mysql://seigod_t@127.0.0.1:1/seigo"]
password_env = "SEIGOD_TEST_PW"
[statements]
get = "SELECT 1"
"""


def check(text, env=None):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
        path = f.name
    try:
        e = dict(os.environ)
        e["SEIGOD_TEST_PW"] = "s3cret-config-pw"
        e.update(env or {})
        p = subprocess.run([harness.SEIGOD_BIN, "--config", path, "--check-config"],
                           capture_output=True, text=True, env=e, timeout=30)
        return p.returncode, p.stdout + p.stderr
    finally:
        os.unlink(path)


class SeigodConfig(unittest.TestCase):
    def test_a_good_config_is_summarised(self):
        rc, out = check(GOOD)
        self.assertEqual(rc, 0, out)
        self.assertIn("1 shard(s)", out)
        self.assertIn("1 statement(s)", out)
        self.assertNotIn("s3cret-config-pw", out)

    def refused(self, text, *needles, env=None):
        rc, out = check(text, env)
        self.assertEqual(rc, 1, out)
        for n in needles:
            self.assertIn(n, out)
        self.assertNotIn("s3cret-config-pw", out)
        self.assertNotIn("inline-pw-99", out)
        return out

    def test_an_unknown_key_is_refused(self):
        self.refused(GOOD.replace("[server]", "[server]\nlisten_port = 1"),
                     "server.listen_port", "unknown key")

    def test_an_unknown_section_is_refused(self):
        self.refused(GOOD + "\n[sharding]\nx = 1\n", "sharding", "unknown section")

    def test_missing_shards_are_refused(self):
        self.refused('[statements]\nget = "SELECT 1"\n', "shards", "missing")

    def test_a_bad_port_is_refused(self):
        self.refused(GOOD.replace("127.0.0.1:36872", "127.0.0.1:99999"), "server.listen")

    def test_an_unset_password_variable_is_refused(self):
        self.refused(GOOD.replace("SEIGOD_TEST_PW", "SEIGOD_NOT_SET_ANYWHERE"),
                     "SEIGOD_NOT_SET_ANYWHERE", "not set")

    def test_two_password_sources_are_refused(self):
        self.refused(GOOD.replace('password_env = "SEIGOD_TEST_PW"',
                                  'password_env = "SEIGOD_TEST_PW"\npassword_file = "/x"'),
                     "give one")

    def test_an_inline_password_with_another_source_is_refused_without_echo(self):
        self.refused(GOOD.replace("seigod_t@", "seigod_t:inline-pw-99@"), "give one")

    def test_a_bad_scheme_is_refused_without_echoing_the_url(self):
        self.refused(GOOD.replace("mysql://seigod_t@", "postgres://u:inline-pw-99@"),
                     "shards.urls[0]", "mysql://")

    def test_an_out_of_range_limit_is_refused(self):
        self.refused(GOOD.replace("[server]", "[server]\nmax_steps = 0"), "server.max_steps")

    def test_a_wrong_type_is_refused(self):
        self.refused(GOOD.replace("[server]", '[server]\nallow_raw_sql = "yes"'),
                     "server.allow_raw_sql")

    def test_a_toml_syntax_error_names_the_line(self):
        self.refused(GOOD + "\n[statements\n", ":")

    def test_an_empty_statement_is_refused(self):
        self.refused(GOOD.replace('get = "SELECT 1"', 'get = ""'), "statements.get")

    def test_a_short_admin_token_is_refused(self):
        self.refused(GOOD.replace("[server]", '[server]\nadmin_token_env = "SEIGOD_TOK"'),
                     "at least 16", env={"SEIGOD_TOK": "short"})

    def test_a_missing_config_file_is_an_error(self):
        p = subprocess.run([harness.SEIGOD_BIN, "--config", "/nonexistent/seigod.toml"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot read", p.stderr)

    def test_usage_errors_exit_2(self):
        p = subprocess.run([harness.SEIGOD_BIN, "--bogus"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 2)
        p = subprocess.run([harness.SEIGOD_BIN], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2)

    def test_a_port_in_use_fails_at_start(self):
        with harness.Seigod(36873) as first:
            second = harness.Seigod(36873)
            second.start(wait=False)
            rc = second.proc.wait(timeout=30)
            self.assertEqual(rc, 1, second.log_text())
            self.assertIn("cannot listen", second.log_text())
            self.assertEqual(first.request("GET", "/healthz")[0], 200)


if __name__ == "__main__":
    unittest.main()
