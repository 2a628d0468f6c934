/* The interception library under a C program: every call it serves, checked against
 * what POSIX says, in a directory of a nacre mount given as argv[1]. Prints "ok" and
 * exits 0, or names the first check that failed and exits 1. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static int failed;
#define CHECK(c)                                                                  \
  do {                                                                            \
    if (!(c)) {                                                                   \
      fprintf(stderr, "io.c:%d: %s failed (errno %d: %s)\n", __LINE__, #c, errno, \
              strerror(errno));                                                   \
      failed = 1;                                                                 \
      return;                                                                     \
    }                                                                             \
  } while (0)

static char dir[4096];
static char *at(const char *name) {
  static char buf[2][4200];
  static int k;
  k ^= 1;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

static void files(void) {
  char big[3 << 20], back[3 << 20];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (char)(i * 7 + 3);
  int fd = open(at("f"), O_CREAT | O_EXCL | O_RDWR, 0640);
  CHECK(fd >= 0);
  CHECK(open(at("f"), O_CREAT | O_EXCL | O_RDWR, 0640) == -1 && errno == EEXIST);
  CHECK(write(fd, big, sizeof big) == (ssize_t)sizeof big);
  CHECK(lseek(fd, 0, SEEK_CUR) == (off_t)sizeof big);
  CHECK(lseek(fd, 0, SEEK_SET) == 0);
  CHECK(read(fd, back, sizeof back) == (ssize_t)sizeof back);
  CHECK(memcmp(big, back, sizeof big) == 0);
  CHECK(read(fd, back, 10) == 0); /* at the end */
  CHECK(pwrite(fd, "XYZ", 3, 10) == 3);
  CHECK(pread(fd, back, 5, 9) == 5 && memcmp(back + 1, "XYZ", 3) == 0);
  CHECK(lseek(fd, -4, SEEK_END) == (off_t)sizeof big - 4);
  struct stat st;
  CHECK(fstat(fd, &st) == 0 && st.st_size == (off_t)sizeof big && S_ISREG(st.st_mode));
  CHECK((st.st_mode & 07777) == (0640 & ~umask(022)));
  umask(022);
  CHECK(ftruncate(fd, 100) == 0);
  CHECK(fstat(fd, &st) == 0 && st.st_size == 100);
  CHECK(fsync(fd) == 0);
  /* dup shares the offset; dup2 onto it too */
  CHECK(lseek(fd, 20, SEEK_SET) == 20);
  int d = dup(fd);
  CHECK(d >= 0 && lseek(d, 0, SEEK_CUR) == 20);
  CHECK(read(d, back, 5) == 5 && lseek(fd, 0, SEEK_CUR) == 25);
  int d2 = dup2(fd, 100);
  CHECK(d2 == 100 && lseek(100, 0, SEEK_CUR) == 25);
  CHECK(close(d) == 0 && close(100) == 0);
  CHECK(fcntl(fd, F_GETFL) & O_RDWR);
  /* readv and writev */
  struct iovec iov[2] = {{"hello ", 6}, {"world", 5}};
  CHECK(lseek(fd, 0, SEEK_SET) == 0 && writev(fd, iov, 2) == 11);
  char a[6], b[5];
  struct iovec riov[2] = {{a, 6}, {b, 5}};
  CHECK(lseek(fd, 0, SEEK_SET) == 0 && readv(fd, riov, 2) == 11);
  CHECK(memcmp(a, "hello ", 6) == 0 && memcmp(b, "world", 5) == 0);
  /* attributes by descriptor */
  struct timespec ts[2] = {{1000, 5}, {2000, 7}};
  CHECK(futimens(fd, ts) == 0 && fstat(fd, &st) == 0);
  CHECK(st.st_atim.tv_sec == 1000 && st.st_mtim.tv_sec == 2000 && st.st_mtim.tv_nsec == 7);
  struct timespec omit_now[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
  CHECK(futimens(fd, omit_now) == 0 && fstat(fd, &st) == 0);
  CHECK(st.st_atim.tv_sec == 1000 && st.st_mtim.tv_sec > 2000);
  CHECK(fchown(fd, -1, -1) == 0);
  if (geteuid() == 0) {
    CHECK(fchown(fd, 1000, 1000) == 0 && fstat(fd, &st) == 0 && st.st_uid == 1000 && st.st_gid == 1000);
    CHECK(fchown(fd, 0, 0) == 0);
  }
  CHECK(close(fd) == 0);
  CHECK(close(fd) == -1 && errno == EBADF);

  /* O_APPEND, O_TRUNC, a read-only descriptor */
  fd = open(at("f"), O_WRONLY | O_APPEND);
  CHECK(fd >= 0 && write(fd, "END", 3) == 3 && close(fd) == 0);
  CHECK(stat(at("f"), &st) == 0 && st.st_size == 103);
  fd = open(at("f"), O_RDONLY);
  CHECK(fd >= 0 && write(fd, "x", 1) == -1 && errno == EBADF);
  CHECK(pread(fd, back, 3, 100) == 3 && memcmp(back, "END", 3) == 0);
  CHECK(close(fd) == 0);
  fd = open(at("f"), O_WRONLY | O_TRUNC);
  CHECK(fd >= 0 && close(fd) == 0 && stat(at("f"), &st) == 0 && st.st_size == 0);
  CHECK(open(at("missing"), O_RDONLY) == -1 && errno == ENOENT);
  CHECK(open(at("f/x"), O_RDONLY) == -1 && errno == ENOTDIR);
}

/* What the library does not serve goes to the kernel, on the same file. */
static void handed_over(void) {
  int fd = open(at("m"), O_CREAT | O_RDWR | O_TRUNC, 0644);
  CHECK(fd >= 0 && write(fd, "mapped bytes", 12) == 12);
  char *p = mmap(NULL, 12, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  CHECK(p != MAP_FAILED && memcmp(p, "mapped bytes", 12) == 0);
  memcpy(p, "MAPPED", 6);
  CHECK(msync(p, 12, MS_SYNC) == 0 && munmap(p, 12) == 0);
  char back[12];
  CHECK(pread(fd, back, 12, 0) == 12 && memcmp(back, "MAPPED bytes", 12) == 0);
  CHECK(fchmod(fd, 0600) == 0);
  struct stat st;
  CHECK(fstat(fd, &st) == 0 && (st.st_mode & 0777) == 0600);
  CHECK(flock(fd, LOCK_EX) == 0 && flock(fd, LOCK_UN) == 0);
  CHECK(close(fd) == 0);

  /* A child inherits a descriptor: it reads on from the shared offset. */
  fd = open(at("f2"), O_CREAT | O_RDWR | O_TRUNC, 0644);
  CHECK(fd >= 0 && write(fd, "parent-child", 12) == 12);
  CHECK(lseek(fd, 7, SEEK_SET) == 7);
  pid_t pid = fork();
  if (pid == 0) {
    char c[5];
    _exit(read(fd, c, 5) == 5 && memcmp(c, "child", 5) == 0 ? 0 : 1);
  }
  int status;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(close(fd) == 0);
}

static void names(void) {
  CHECK(mkdir(at("sub"), 0755) == 0);
  CHECK(mkdir(at("sub"), 0755) == -1 && errno == EEXIST);
  int fd = creat(at("sub/a"), 0644);
  CHECK(fd >= 0 && close(fd) == 0);
  CHECK(access(at("sub/a"), R_OK | W_OK) == 0);
  CHECK(access(at("sub/a"), X_OK) == -1 && errno == EACCES);
  CHECK(access(at("sub/none"), F_OK) == -1 && errno == ENOENT);
  CHECK(rename(at("sub/a"), at("sub/b")) == 0);
  struct stat st;
  CHECK(stat(at("sub/a"), &st) == -1 && errno == ENOENT);
  CHECK(lstat(at("sub/b"), &st) == 0 && S_ISREG(st.st_mode));
  CHECK(rmdir(at("sub")) == -1 && errno == ENOTEMPTY);
  DIR *d = opendir(at("sub"));
  CHECK(d != NULL);
  int seen = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, "b") == 0 && e->d_type == DT_REG) seen |= 1;
    if (strcmp(e->d_name, ".") == 0 && e->d_type == DT_DIR) seen |= 2;
    if (strcmp(e->d_name, "..") == 0) seen |= 4;
  }
  CHECK(seen == 7);
  rewinddir(d);
  CHECK(readdir(d) != NULL);
  CHECK(dirfd(d) >= 0);
  CHECK(closedir(d) == 0);
  CHECK(opendir(at("sub/b")) == NULL && errno == ENOTDIR);
  CHECK(unlink(at("sub/b")) == 0 && unlink(at("sub/b")) == -1 && errno == ENOENT);
  CHECK(rmdir(at("sub")) == 0);
  /* relative paths, *at calls */
  CHECK(chdir(dir) == 0);
  fd = open("rel", O_CREAT | O_WRONLY, 0644);
  CHECK(fd >= 0 && write(fd, "r", 1) == 1 && close(fd) == 0);
  int dfd = open(dir, O_RDONLY | O_DIRECTORY);
  CHECK(dfd >= 0 && fstatat(dfd, "rel", &st, 0) == 0 && st.st_size == 1);
  CHECK(unlinkat(dfd, "rel", 0) == 0 && faccessat(dfd, "rel", F_OK, 0) == -1 && errno == ENOENT);
  CHECK(close(dfd) == 0);
  /* a symbolic link is the kernel's to follow */
  CHECK(symlink("f2", at("link")) == 0);
  CHECK(stat(at("link"), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 12);
  CHECK(lstat(at("link"), &st) == 0 && S_ISLNK(st.st_mode));
  fd = open(at("link"), O_RDONLY);
  char c[6];
  CHECK(fd >= 0 && read(fd, c, 6) == 6 && memcmp(c, "parent", 6) == 0 && close(fd) == 0);
  char lbuf[64];
  CHECK(readlink(at("link"), lbuf, sizeof lbuf) == 2 && memcmp(lbuf, "f2", 2) == 0);
  /* attributes by path, hard links, temporary files, stdio */
  char tmpl[4200];
  snprintf(tmpl, sizeof tmpl, "%s/tmpXXXXXX", dir);
  fd = mkstemp(tmpl);
  CHECK(fd >= 0 && write(fd, "t", 1) == 1 && close(fd) == 0);
  CHECK(chmod(tmpl, 0640) == 0 && stat(tmpl, &st) == 0 && (st.st_mode & 0777) == 0640);
  CHECK(truncate(tmpl, 10) == 0 && stat(tmpl, &st) == 0 && st.st_size == 10);
  struct timespec t2[2] = {{100, 0}, {200, 0}};
  CHECK(utimensat(AT_FDCWD, tmpl, t2, 0) == 0 && stat(tmpl, &st) == 0 && st.st_mtim.tv_sec == 200);
  CHECK(link(tmpl, at("hard")) == 0 && stat(at("hard"), &st) == 0 && st.st_nlink == 2);
  CHECK(unlink(tmpl) == 0 && unlink(at("hard")) == 0);
  char dtmpl[4200];
  snprintf(dtmpl, sizeof dtmpl, "%s/dXXXXXX", dir);
  CHECK(mkdtemp(dtmpl) != NULL && stat(dtmpl, &st) == 0 && S_ISDIR(st.st_mode) && rmdir(dtmpl) == 0);
  FILE *f = fopen(at("stdio"), "w");
  CHECK(f != NULL && fprintf(f, "x=%d\n", 7) > 0 && fileno(f) > 2 && fclose(f) == 0);
  f = fopen(at("stdio"), "r");
  char line[16];
  CHECK(f != NULL && fgets(line, sizeof line, f) != NULL && strcmp(line, "x=7\n") == 0);
  CHECK(fclose(f) == 0);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: io DIR\n");
    return 2;
  }
  snprintf(dir, sizeof dir, "%s", argv[1]);
  files();
  if (!failed) handed_over();
  if (!failed) names();
  if (failed) return 1;
  printf("ok\n");
  return 0;
}
