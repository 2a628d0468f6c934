/* Exercises every call of nacre.h against a running file system, the failures as well
 * as the successes, and one handle shared by several threads.
 * Usage: abi_test MGS_ADDRESS */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nacre.h>

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "abi_test: %s:%d: failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                      \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

#define THREADS 4
#define BLOCK (100 * 1000 + 7)
#define BLOCKS 16

static unsigned char byte_at(size_t i) { return (unsigned char)((i * 2654435761u) >> 13); }

struct job {
    nacre_file *file;
    int id;
};

static void *writer(void *arg) {
    struct job *j = arg;
    unsigned char *buf = malloc(BLOCK);
    for (int b = j->id; b < BLOCKS; b += THREADS) {
        size_t at = (size_t)b * BLOCK;
        for (size_t i = 0; i < BLOCK; i++) buf[i] = byte_at(at + i);
        if (nacre_pwrite(j->file, buf, BLOCK, at) != BLOCK) {
            fprintf(stderr, "abi_test: thread %d: pwrite of block %d failed\n", j->id, b);
            exit(1);
        }
    }
    free(buf);
    return NULL;
}

static int count_entry(const nacre_dirent_t *e, void *arg) {
    int *seen = arg;
    if (strcmp(e->name, "striped") == 0) CHECK(e->kind == NACRE_KIND_FILE);
    if (strcmp(e->name, "sub") == 0) CHECK(e->kind == NACRE_KIND_DIR);
    (*seen)++;
    return 0;
}

static int stop_at_first(const nacre_dirent_t *e, void *arg) {
    (void)e;
    (*(int *)arg)++;
    return 1;
}

int main(int argc, char **argv) {
    nacre_fs *fs = NULL;
    nacre_file *f = NULL;
    nacre_stat_t st;
    nacre_layout_t lay;

    CHECK(argc == 2);
    CHECK(nacre_connect("127.0.0.1:1", &fs) < 0); /* nobody there */
    CHECK(nacre_connect(argv[1], &fs) == 0 && fs != NULL);

    CHECK(nacre_mkdir(fs, "/c", 0755) == 0);
    CHECK(nacre_mkdir(fs, "/c", 0755) == -EEXIST);
    CHECK(nacre_mkdir(fs, "/c/sub", 0700) == 0);
    CHECK(nacre_stat(fs, "/c/missing", &st) == -ENOENT);
    CHECK(nacre_open(fs, "/c/missing", O_RDONLY, 0, NULL, &f) == -ENOENT);
    CHECK(nacre_mkdir(fs, NULL, 0755) == -EINVAL);
    CHECK(nacre_pread(NULL, &st, 1, 0) == -EBADF);

    /* A bad layout is refused before anything is created. */
    memset(&lay, 0, sizeof lay);
    lay.stripe_count = 2;
    lay.stripe_size = 1000; /* not a multiple of 64 KiB */
    lay.first_ost = -1;
    CHECK(nacre_open(fs, "/c/bad", O_RDWR | O_CREAT, 0644, &lay, &f) == -EINVAL);
    CHECK(nacre_stat(fs, "/c/bad", &st) == -ENOENT);

    /* Four threads share one handle, each writing its blocks of a 2-stripe file. */
    lay.stripe_size = 64 * 1024;
    CHECK(nacre_open(fs, "/c/striped", O_RDWR | O_CREAT | O_EXCL, 0640, &lay, &f) == 0);
    CHECK(nacre_open(fs, "/c/striped", O_RDWR | O_CREAT | O_EXCL, 0640, &lay, &f) == -EEXIST);
    pthread_t t[THREADS];
    struct job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i].file = f;
        jobs[i].id = i;
        CHECK(pthread_create(&t[i], NULL, writer, &jobs[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    CHECK(nacre_fsync(f) == 0);
    CHECK(nacre_fstat(f, &st) == 0);
    CHECK(st.size == (uint64_t)BLOCK * BLOCKS && st.kind == NACRE_KIND_FILE);
    CHECK((st.mode & 07777) == 0640);

    size_t total = (size_t)BLOCK * BLOCKS;
    unsigned char *back = malloc(total + 10);
    CHECK(nacre_pread(f, back, total + 10, 0) == (ssize_t)total);
    for (size_t i = 0; i < total; i++) CHECK(back[i] == byte_at(i));
    CHECK(nacre_pread(f, back, 10, total) == 0);
    CHECK(nacre_ftruncate(f, 1000) == 0);
    CHECK(nacre_fstat(f, &st) == 0 && st.size == 1000);
    CHECK(nacre_close(f) == 0);

    /* A buffered handle: small writes in order, seen by a plain handle after fsync. */
    enum { PIECE = 1000, PIECES = 3000 };
    nacre_file *bf, *pf;
    CHECK(nacre_open(fs, "/c/buffered", O_RDWR | O_CREAT | NACRE_O_BUFFERED, 0644, NULL,
                     &bf) == 0);
    unsigned char *want = malloc((size_t)PIECE * PIECES);
    for (size_t i = 0; i < (size_t)PIECE * PIECES; i++) want[i] = byte_at(i);
    for (int i = 0; i < PIECES; i++)
        CHECK(nacre_pwrite(bf, want + (size_t)i * PIECE, PIECE, (uint64_t)i * PIECE) == PIECE);
    CHECK(nacre_fsync(bf) == 0);
    CHECK(nacre_open(fs, "/c/buffered", O_RDONLY, 0, NULL, &pf) == 0);
    unsigned char *seen_back = malloc((size_t)PIECE * PIECES);
    CHECK(nacre_pread(pf, seen_back, (size_t)PIECE * PIECES, 0) == (ssize_t)PIECE * PIECES);
    CHECK(memcmp(seen_back, want, (size_t)PIECE * PIECES) == 0);
    CHECK(nacre_close(pf) == 0 && nacre_close(bf) == 0);
    CHECK(nacre_unlink(fs, "/c/buffered") == 0);
    free(seen_back);
    free(want);

    CHECK(nacre_get_layout(fs, "/c/striped", &lay) == 0);
    CHECK(lay.stripe_count == 2 && lay.stripe_size == 64 * 1024);
    CHECK(lay.osts[0] != lay.osts[1]);
    /* A new directory inherits its parent's default striping. */
    CHECK(nacre_get_layout(fs, "/c", &lay) == 0 && lay.stripe_count != 0);
    lay.stripe_count = -1;
    lay.stripe_size = 1 << 20;
    lay.first_ost = -1;
    CHECK(nacre_set_layout(fs, "/c/sub", &lay) == 0);
    memset(&lay, 0, sizeof lay);
    CHECK(nacre_get_layout(fs, "/c/sub", &lay) == 0 && lay.stripe_count == -1);

    int seen = 0;
    CHECK(nacre_readdir(fs, "/c", count_entry, &seen) == 2 && seen == 2);
    seen = 0;
    CHECK(nacre_readdir(fs, "/c", stop_at_first, &seen) == 1 && seen == 1);
    CHECK(nacre_readdir(fs, "/c/striped", count_entry, &seen) == -ENOTDIR);

    CHECK(nacre_rename(fs, "/c/striped", "/c/sub/moved") == 0);
    CHECK(nacre_stat(fs, "/c/sub/moved", &st) == 0 && st.size == 1000);
    CHECK(nacre_rmdir(fs, "/c/sub") == -ENOTEMPTY);
    CHECK(nacre_unlink(fs, "/c/sub/moved") == 0);
    CHECK(nacre_rmdir(fs, "/c/sub") == 0);
    CHECK(nacre_rmdir(fs, "/c") == 0);

    /* The OSTs' bytes come with their servers' lease renewals: 0 until the first. */
    nacre_statfs_t sf;
    CHECK(nacre_statfs(fs, &sf) == 0 && sf.bytes_free <= sf.bytes_total);
    CHECK(sf.files_total > 0 && sf.name_max == 255);
    CHECK(nacre_statfs(fs, NULL) == -EINVAL);
    free(back);
    nacre_disconnect(fs);
    printf("abi_test: ok\n");
    return 0;
}
