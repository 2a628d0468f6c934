/*
 * aiori-NACRE.c - an IOR/mdtest backend (AIORI) for the nacre parallel file system,
 * over nacre's C interface (nacre.h, libnacre). Each MPI rank is one nacre client: no
 * kernel, no FUSE, the data path straight from IOR's buffers to the servers.
 *
 * Copyright (c) the nacre authors. SPDX-License-Identifier: MIT
 * (MIT, so that it may be compiled into IOR, which is GPL-2.0.)
 *
 * Built into IOR by bench/io500/build (which adds it to src/aiori.c and src/Makefile.am
 * of a vendored IOR tree); selected with `-a NACRE` (IOR, mdtest) or `api = NACRE`
 * (io500). Paths are paths inside the file system ("/io500/datafiles/...").
 *
 * Options: --nacre.mgs=HOST:PORT (default: $NACRE_MGS), --nacre.prefix=DIR (default:
 * $NACRE_PREFIX): where the same file system is mounted, so that a path under DIR names
 * the file DIR/x is in the file system ("/x"); tools that only speak POSIX (io500's
 * find phase, pfind) then walk the mount while IOR and mdtest go native, as DAOS's
 * dfs.prefix does with dfuse. --nacre.stripe-count=N and
 * --nacre.stripe-size=BYTES for the files it creates (default: the directory's),
 * --nacre.buffered (open with NACRE_O_BUFFERED: small writes gathered, MPI-IO's
 * consistency). The file system key comes from $NACRE_KEY, as for every client.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nacre.h>

#include "aiori.h"
#include "ior.h"
#include "utilities.h"

typedef struct {
    char *mgs;
    char *prefix;
    int stripe_count;
    uint64_t stripe_size;
    int buffered;
} nacre_options_t;

/* One connection per process, made at the first call that needs it. */
static nacre_fs *fs;
static aiori_xfer_hint_t *hints;

static option_help *NACRE_options(aiori_mod_opt_t **init_backend_options,
                                  aiori_mod_opt_t *init_values)
{
    nacre_options_t *o = malloc(sizeof(*o));
    if (init_values != NULL)
        memcpy(o, init_values, sizeof(*o));
    else
        memset(o, 0, sizeof(*o));
    *init_backend_options = (aiori_mod_opt_t *)o;
    option_help h[] = {
        {0, "nacre.mgs", "MGS address HOST:PORT (default: $NACRE_MGS)",
         OPTION_OPTIONAL_ARGUMENT, 's', &o->mgs},
        {0, "nacre.prefix", "Mount point of this file system (default: $NACRE_PREFIX)",
         OPTION_OPTIONAL_ARGUMENT, 's', &o->prefix},
        {0, "nacre.stripe-count", "Stripe count of created files (0: the directory's)",
         OPTION_OPTIONAL_ARGUMENT, 'd', &o->stripe_count},
        {0, "nacre.stripe-size", "Stripe size of created files (0: the directory's)",
         OPTION_OPTIONAL_ARGUMENT, 'l', &o->stripe_size},
        {0, "nacre.buffered", "Gather small writes (NACRE_O_BUFFERED)", OPTION_FLAG, 'd',
         &o->buffered},
        LAST_OPTION};
    option_help *help = malloc(sizeof(h));
    memcpy(help, h, sizeof(h));
    return help;
}

static nacre_fs *conn(aiori_mod_opt_t *options)
{
    if (fs == NULL) {
        nacre_options_t *o = (nacre_options_t *)options;
        const char *mgs = (o != NULL && o->mgs != NULL) ? o->mgs : NULL;
        int rc = nacre_connect(mgs, &fs);
        if (rc < 0)
            ERRF("nacre_connect(%s): %s", mgs ? mgs : "$NACRE_MGS", strerror(-rc));
    }
    return fs;
}

/* Where the file system is mounted, if anywhere ("" when not). */
static const char *prefix = "";
static int prefix_set;

/* Takes the prefix from the options, else $NACRE_PREFIX; once. */
static void setup(aiori_mod_opt_t *options)
{
    nacre_options_t *o = (nacre_options_t *)options;
    const char *p = (o != NULL && o->prefix != NULL) ? o->prefix : getenv("NACRE_PREFIX");
    if (prefix_set)
        return;
    prefix_set = 1;
    if (p != NULL) {
        /* Without its trailing slashes: "/mnt/nacre/" and "/mnt/nacre" are one prefix. */
        char *copy = strdup(p);
        size_t n = strlen(copy);
        while (n > 1 && copy[n - 1] == '/')
            copy[--n] = '\0';
        prefix = copy;
    }
}

/* The path inside the file system of a path IOR names. */
static const char *fs_path(const char *path)
{
    setup(NULL);
    size_t n = strlen(prefix);
    if (n == 0 || strncmp(path, prefix, n) != 0)
        return path;
    if (path[n] == '\0')
        return "/";
    return path[n] == '/' ? path + n : path;
}

/* A negative errno as POSIX calls report it: -1 with errno set. */
static int posix_rc(int rc)
{
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return 0;
}

static int open_flags(int iorflags)
{
    int flags = 0;
    if (iorflags & IOR_RDONLY)
        flags |= O_RDONLY;
    if (iorflags & IOR_WRONLY)
        flags |= O_WRONLY;
    if (iorflags & IOR_RDWR)
        flags |= O_RDWR;
    if (iorflags & IOR_APPEND)
        flags |= O_APPEND;
    if (iorflags & IOR_CREAT)
        flags |= O_CREAT;
    if (iorflags & IOR_TRUNC)
        flags |= O_TRUNC;
    if (iorflags & IOR_EXCL)
        flags |= O_EXCL;
    /* IOR_DIRECT: nacre's data path has no client cache to bypass. */
    return flags;
}

static aiori_fd_t *open_file(char *path, int flags, aiori_mod_opt_t *options)
{
    nacre_options_t *o = (nacre_options_t *)options;
    nacre_layout_t layout, *lay = NULL;
    if ((flags & O_CREAT) && (o->stripe_count != 0 || o->stripe_size != 0)) {
        memset(&layout, 0, sizeof(layout));
        layout.stripe_count = o->stripe_count;
        layout.stripe_size = (uint32_t)o->stripe_size;
        layout.first_ost = -1;
        lay = &layout;
    }
    if (o->buffered)
        flags |= NACRE_O_BUFFERED;
    nacre_file *file = NULL;
    int rc = nacre_open(conn(options), fs_path(path), flags, 0664, lay, &file);
    if (rc < 0)
        ERRF("nacre_open(%s, 0x%x): %s", path, flags, strerror(-rc));
    return (aiori_fd_t *)file;
}

static aiori_fd_t *NACRE_Create(char *path, int iorflags, aiori_mod_opt_t *options)
{
    return open_file(path, open_flags(iorflags) | O_CREAT, options);
}

static aiori_fd_t *NACRE_Open(char *path, int iorflags, aiori_mod_opt_t *options)
{
    return open_file(path, open_flags(iorflags), options);
}

/* mdtest -k: an empty file, made and closed. */
static int NACRE_Mknod(char *path)
{
    nacre_file *file = NULL;
    int rc = nacre_open(conn(NULL), fs_path(path), O_CREAT | O_EXCL | O_WRONLY, 0664, NULL, &file);
    if (rc < 0)
        return posix_rc(rc);
    return posix_rc(nacre_close(file));
}

static void NACRE_xfer_hints(aiori_xfer_hint_t *params)
{
    hints = params;
}

/* Moves the whole length, as IOR expects, unless the file ends first (a read). */
static IOR_offset_t NACRE_Xfer(int access, aiori_fd_t *fd, IOR_size_t *buffer,
                               IOR_offset_t length, IOR_offset_t offset,
                               aiori_mod_opt_t *options)
{
    nacre_file *file = (nacre_file *)fd;
    char *p = (char *)buffer;
    IOR_offset_t done = 0;
    if (hints != NULL && hints->dryRun)
        return length;
    while (done < length) {
        size_t n = (size_t)(length - done);
        ssize_t rc = access == WRITE
                         ? nacre_pwrite(file, p + done, n, (uint64_t)(offset + done))
                         : nacre_pread(file, p + done, n, (uint64_t)(offset + done));
        if (rc < 0)
            ERRF("nacre_%s of %zu bytes at %lld: %s", access == WRITE ? "pwrite" : "pread",
                 n, (long long)(offset + done), strerror((int)-rc));
        if (rc == 0)
            break; /* end of file */
        done += rc;
    }
    return done;
}

static void NACRE_Fsync(aiori_fd_t *fd, aiori_mod_opt_t *options)
{
    int rc = nacre_fsync((nacre_file *)fd);
    if (rc < 0)
        ERRF("nacre_fsync: %s", strerror(-rc));
}

static void NACRE_Close(aiori_fd_t *fd, aiori_mod_opt_t *options)
{
    int rc = nacre_close((nacre_file *)fd);
    if (rc < 0)
        ERRF("nacre_close: %s", strerror(-rc));
}

static void NACRE_Delete(char *path, aiori_mod_opt_t *options)
{
    int rc = nacre_unlink(conn(options), fs_path(path));
    if (rc < 0)
        WARNF("nacre_unlink(%s): %s", path, strerror(-rc));
}

static char *NACRE_Version(void)
{
    return "nacre";
}

static IOR_offset_t NACRE_GetFileSize(aiori_mod_opt_t *options, char *path)
{
    nacre_stat_t st;
    if (hints != NULL && hints->dryRun)
        return 0;
    int rc = nacre_stat(conn(options), fs_path(path), &st);
    if (rc < 0)
        ERRF("nacre_stat(%s): %s", path, strerror(-rc));
    return (IOR_offset_t)st.size;
}

static int NACRE_Statfs(const char *path, ior_aiori_statfs_t *out, aiori_mod_opt_t *options)
{
    nacre_statfs_t s;
    int rc = nacre_statfs(conn(options), &s);
    if (rc < 0)
        return posix_rc(rc);
    out->f_bsize = 4096;
    out->f_blocks = s.bytes_total / 4096;
    out->f_bfree = s.bytes_free / 4096;
    out->f_bavail = s.bytes_free / 4096;
    out->f_files = s.files_total;
    out->f_ffree = s.files_free;
    return 0;
}

static int NACRE_Mkdir(const char *path, mode_t mode, aiori_mod_opt_t *options)
{
    return posix_rc(nacre_mkdir(conn(options), fs_path(path), mode));
}

static int NACRE_Rmdir(const char *path, aiori_mod_opt_t *options)
{
    return posix_rc(nacre_rmdir(conn(options), fs_path(path)));
}

static int NACRE_Rename(const char *from, const char *to, aiori_mod_opt_t *options)
{
    return posix_rc(nacre_rename(conn(options), fs_path(from), fs_path(to)));
}

static mode_t type_bits(uint32_t kind)
{
    switch (kind) {
    case NACRE_KIND_DIR: return S_IFDIR;
    case NACRE_KIND_SYMLINK: return S_IFLNK;
    case NACRE_KIND_FIFO: return S_IFIFO;
    case NACRE_KIND_SOCKET: return S_IFSOCK;
    case NACRE_KIND_CHARDEV: return S_IFCHR;
    case NACRE_KIND_BLOCKDEV: return S_IFBLK;
    default: return S_IFREG;
    }
}

static int NACRE_Stat(const char *path, struct stat *buf, aiori_mod_opt_t *options)
{
    nacre_stat_t st;
    int rc = nacre_stat(conn(options), fs_path(path), &st);
    if (rc < 0)
        return posix_rc(rc);
    memset(buf, 0, sizeof(*buf));
    buf->st_ino = st.ino;
    buf->st_mode = type_bits(st.kind) | st.mode;
    buf->st_uid = st.uid;
    buf->st_gid = st.gid;
    buf->st_nlink = st.nlink;
    buf->st_size = (off_t)st.size;
    buf->st_blksize = 4096;
    buf->st_blocks = (blkcnt_t)((st.size + 511) / 512);
    buf->st_rdev = st.rdev;
    buf->st_atim.tv_sec = st.atime_ns / 1000000000;
    buf->st_atim.tv_nsec = st.atime_ns % 1000000000;
    buf->st_mtim.tv_sec = st.mtime_ns / 1000000000;
    buf->st_mtim.tv_nsec = st.mtime_ns % 1000000000;
    buf->st_ctim.tv_sec = st.ctime_ns / 1000000000;
    buf->st_ctim.tv_nsec = st.ctime_ns % 1000000000;
    return 0;
}

/* Existence (the servers check permissions at each operation; callers here are the
 * benchmark's own directories). */
static int NACRE_Access(const char *path, int mode, aiori_mod_opt_t *options)
{
    nacre_stat_t st;
    return posix_rc(nacre_stat(conn(options), fs_path(path), &st));
}

static void NACRE_Initialize(aiori_mod_opt_t *options)
{
    setup(options);
}

static void NACRE_Finalize(aiori_mod_opt_t *options)
{
    if (fs != NULL) {
        nacre_disconnect(fs);
        fs = NULL;
    }
}

static int NACRE_check_params(aiori_mod_opt_t *options)
{
    nacre_options_t *o = (nacre_options_t *)options;
    setup(options);
    if (o->mgs == NULL && getenv("NACRE_MGS") == NULL)
        ERR("NACRE: no MGS address: set --nacre.mgs or NACRE_MGS");
    if (o->stripe_size % 65536 != 0)
        ERR("NACRE: --nacre.stripe-size must be a multiple of 64 KiB");
    return 0;
}

/* Unbuffered writes reached the servers when their call returned; buffered handles
 * send theirs at close, which IOR does before it syncs. */
static void NACRE_Sync(aiori_mod_opt_t *options)
{
}

ior_aiori_t nacre_aiori = {
    .name = "NACRE",
    .name_legacy = NULL,
    .create = NACRE_Create,
    .mknod = NACRE_Mknod,
    .open = NACRE_Open,
    .xfer_hints = NACRE_xfer_hints,
    .xfer = NACRE_Xfer,
    .close = NACRE_Close,
    .remove = NACRE_Delete,
    .get_version = NACRE_Version,
    .fsync = NACRE_Fsync,
    .get_file_size = NACRE_GetFileSize,
    .statfs = NACRE_Statfs,
    .mkdir = NACRE_Mkdir,
    .rmdir = NACRE_Rmdir,
    .access = NACRE_Access,
    .stat = NACRE_Stat,
    .initialize = NACRE_Initialize,
    .finalize = NACRE_Finalize,
    .rename = NACRE_Rename,
    .get_options = NACRE_options,
    .check_params = NACRE_check_params,
    .sync = NACRE_Sync,
    .enable_mdtest = true,
};
