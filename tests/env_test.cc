// The real Env (src/env_posix.cc).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>

#include "seigo/env.h"

namespace seigo {
namespace {

// Case 9 of issue 7: the per-thread generator was copied into a fork()ed child, so parent and
// child drew the same gids (two coordinators writing one gid's XIDs and decision row).
TEST(PosixEnv, ForkedChildDrawsDifferentRandomNumbersThanItsParent) {
  Env* env = DefaultEnv();
  (void)env->Random64();  // the parent's generator exists before the fork
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    uint64_t v[2] = {env->Random64(), env->Random64()};
    ssize_t n = write(fds[1], v, sizeof v);
    _exit(n == sizeof v ? 0 : 1);
  }
  uint64_t mine[2] = {env->Random64(), env->Random64()};
  uint64_t child[2] = {0, 0};
  ASSERT_EQ(read(fds[0], child, sizeof child), static_cast<ssize_t>(sizeof child));
  int st = 0;
  waitpid(pid, &st, 0);
  close(fds[0]);
  close(fds[1]);
  EXPECT_TRUE(mine[0] != child[0] || mine[1] != child[1])
      << "parent and child drew the same numbers after fork()";
}

}  // namespace
}  // namespace seigo
