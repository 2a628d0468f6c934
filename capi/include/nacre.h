/*
 * nacre.h - C interface of the nacre parallel file system client.
 *
 * Link with `pkg-config --cflags --libs nacre` (shared) or `--static` (libnacre.a).
 *
 * Conventions:
 *  - Every call returns a count or 0 on success and a negative errno on failure
 *    (-ENOENT, -EEXIST, -EIO...): `strerror(-rc)` describes it.
 *  - Paths are absolute within the file system ("/dir/file").
 *  - Handles are thread-safe: many threads may share one nacre_fs and one
 *    nacre_file (nacre_pread/nacre_pwrite at explicit offsets, like pread/pwrite).
 *    nacre_close and nacre_disconnect free their handle: call them once, after the
 *    other threads are done with it.
 *  - No Rust panic crosses this interface: one is caught and returned as -EIO.
 */
#ifndef NACRE_H
#define NACRE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A connection to one file system. */
typedef struct nacre_fs nacre_fs;
/* An open file. */
typedef struct nacre_file nacre_file;

/* File kinds of nacre_stat_t.kind and nacre_dirent_t.kind. */
#define NACRE_KIND_FILE 1
#define NACRE_KIND_DIR 2
#define NACRE_KIND_SYMLINK 3
#define NACRE_KIND_FIFO 4
#define NACRE_KIND_SOCKET 5
#define NACRE_KIND_CHARDEV 6
#define NACRE_KIND_BLOCKDEV 7

typedef struct nacre_stat {
    uint64_t ino;
    uint32_t kind;  /* NACRE_KIND_* */
    uint32_t mode;  /* permission bits, 07777 */
    uint32_t uid;
    uint32_t gid;
    uint32_t nlink;
    uint32_t pad;
    uint64_t size;
    int64_t atime_ns; /* nanoseconds since the epoch */
    int64_t mtime_ns;
    int64_t ctime_ns;
    uint64_t rdev; /* device nodes: the device number, as stat's st_rdev */
} nacre_stat_t;

/* The file system's totals (df): bytes over its OSTs, inodes of its MDT. */
typedef struct nacre_statfs {
    uint64_t bytes_total;
    uint64_t bytes_free;
    uint64_t files_total;
    uint64_t files_free;
    uint32_t name_max;
    uint32_t pad;
} nacre_statfs_t;

/* RAID-0 striping, as Lustre's `lfs setstripe -c COUNT -S SIZE -i INDEX`. */
typedef struct nacre_layout {
    int32_t stripe_count; /* number of OSTs; -1 = all of them */
    uint32_t stripe_size; /* bytes per stripe: a multiple of 64 KiB */
    int32_t first_ost;    /* OST of the first stripe; -1 = the MDS chooses */
    /* Filled by nacre_get_layout for a file: the OST of each stripe (up to 64);
     * ignored by nacre_open and nacre_set_layout. */
    uint32_t osts[64];
} nacre_layout_t;

typedef struct nacre_dirent {
    const char *name; /* NUL-terminated, valid during the callback only */
    uint64_t ino;
    uint32_t kind;    /* NACRE_KIND_* */
} nacre_dirent_t;

/* Called by nacre_readdir for each entry; a non-zero return stops the listing. */
typedef int (*nacre_readdir_cb)(const nacre_dirent_t *entry, void *arg);

/* Connects to the file system whose MGS is at `mgs` ("host:port"); NULL reads the
 * NACRE_MGS environment variable. */
int nacre_connect(const char *mgs, nacre_fs **fs);
/* Frees the connection. Files opened through it stay usable until closed. */
void nacre_disconnect(nacre_fs *fs);

/* An open flag of nacre's own: the handle gathers small writes into 1 MiB windows
 * and reads a window ahead for reads that continue the last one. Its writes reach
 * other clients when it reads, syncs or closes (or a window fills); it sees other
 * clients' writes synced before its open or its last nacre_fsync (MPI-IO's default
 * consistency). Without it every call is one trip to the servers. */
#define NACRE_O_BUFFERED 0x40000000

/* Opens (O_RDONLY, O_WRONLY, O_RDWR; O_CREAT, O_EXCL, O_TRUNC, O_APPEND; and
 * NACRE_O_BUFFERED) with `mode` for a new file, striped as `layout` (NULL: the
 * directory's default). */
int nacre_open(nacre_fs *fs, const char *path, int flags, mode_t mode,
               const nacre_layout_t *layout, nacre_file **file);
/* Reports the size, closes and frees the handle. */
int nacre_close(nacre_file *file);
/* Reads up to `count` bytes at `offset`: the number read, 0 at end of file. As with
 * read(2), one call moves at most 0x7ffff000 bytes. */
ssize_t nacre_pread(nacre_file *file, void *buf, size_t count, uint64_t offset);
/* Writes `count` bytes at `offset` (at the end with O_APPEND): the number written. */
ssize_t nacre_pwrite(nacre_file *file, const void *buf, size_t count, uint64_t offset);
/* Makes the file's writes durable and its size known to every client. */
int nacre_fsync(nacre_file *file);
/* Sets the size (ftruncate). */
int nacre_ftruncate(nacre_file *file, uint64_t size);
int nacre_fstat(nacre_file *file, nacre_stat_t *st);

int nacre_stat(nacre_fs *fs, const char *path, nacre_stat_t *st);
int nacre_statfs(nacre_fs *fs, nacre_statfs_t *st);
int nacre_mkdir(nacre_fs *fs, const char *path, mode_t mode);
int nacre_rmdir(nacre_fs *fs, const char *path);
int nacre_unlink(nacre_fs *fs, const char *path);
int nacre_rename(nacre_fs *fs, const char *from, const char *to);
/* Lists a directory ("." and ".." excluded), passing each entry to `cb` (which may be
 * NULL, to count): the number of entries listed, up to one that `cb` stopped at. */
int nacre_readdir(nacre_fs *fs, const char *path, nacre_readdir_cb cb, void *arg);
/* Sets a directory's default striping, or the striping of a file not yet written. */
int nacre_set_layout(nacre_fs *fs, const char *path, const nacre_layout_t *layout);
/* A file's striping (with its OSTs), or a directory's default for new files. */
int nacre_get_layout(nacre_fs *fs, const char *path, nacre_layout_t *layout);

#ifdef __cplusplus
}
#endif

#endif /* NACRE_H */
