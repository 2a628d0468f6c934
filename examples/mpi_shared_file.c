/* mpi_shared_file: each MPI rank writes its block of one shared file striped over
 * four OSTs, then reads back the block its neighbour wrote and checks every byte.
 *
 * Build:  mpicc examples/mpi_shared_file.c $(pkg-config --cflags --libs nacre) \
 *             -o mpi_shared_file
 * Run:    NACRE_MGS=127.0.0.1:7450 mpirun -np 4 ./mpi_shared_file [BLOCK_BYTES] [PATH]
 *
 * The default block (4 MiB + 4321 bytes) is not a multiple of the 1 MiB stripe, so
 * ranks share stripes and objects at their edges: the MPI-IO pattern at its hardest.
 */
#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nacre.h>

static unsigned char byte_at(uint64_t i) { return (unsigned char)((i * 2654435761u) >> 11); }

static void fail(int rank, const char *what, long rc) {
    fprintf(stderr, "rank %d: %s: %s\n", rank, what, rc < 0 ? strerror((int)-rc) : "wrong");
    MPI_Abort(MPI_COMM_WORLD, 1);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    size_t block = argc > 1 ? strtoull(argv[1], NULL, 0) : (4u << 20) + 4321;
    const char *path = argc > 2 ? argv[2] : "/mpi_shared_file";

    nacre_fs *fs;
    long rc = nacre_connect(NULL, &fs); /* NACRE_MGS */
    if (rc < 0) fail(rank, "nacre_connect", rc);

    /* Rank 0 creates the file with its striping; the others open it once it exists. */
    nacre_layout_t layout = {.stripe_count = 4, .stripe_size = 1 << 20, .first_ost = -1};
    nacre_file *f = NULL;
    if (rank == 0) {
        rc = nacre_open(fs, path, O_RDWR | O_CREAT | O_TRUNC, 0644, &layout, &f);
        if (rc < 0) fail(rank, "create", rc);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank != 0) {
        rc = nacre_open(fs, path, O_RDWR, 0, NULL, &f);
        if (rc < 0) fail(rank, "open", rc);
    }

    unsigned char *buf = malloc(block);
    uint64_t mine = (uint64_t)rank * block;
    for (size_t i = 0; i < block; i++) buf[i] = byte_at(mine + i);
    rc = nacre_pwrite(f, buf, block, mine);
    if (rc != (long)block) fail(rank, "pwrite", rc);
    rc = nacre_fsync(f);
    if (rc < 0) fail(rank, "fsync", rc);
    MPI_Barrier(MPI_COMM_WORLD);

    int next = (rank + 1) % size;
    uint64_t theirs = (uint64_t)next * block;
    memset(buf, 0, block);
    rc = nacre_pread(f, buf, block, theirs);
    if (rc != (long)block) fail(rank, "pread of the neighbour's block", rc);
    long bad = 0;
    for (size_t i = 0; i < block; i++) bad += buf[i] != byte_at(theirs + i);

    nacre_stat_t st;
    rc = nacre_fstat(f, &st);
    if (rc < 0) fail(rank, "fstat", rc);
    long wrong_size = st.size != (uint64_t)size * block;
    long errors = bad + wrong_size, all = 0;
    MPI_Allreduce(&errors, &all, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (bad) fprintf(stderr, "rank %d: %ld bytes of rank %d's block differ\n", rank, bad, next);

    nacre_layout_t got;
    if (rank == 0 && nacre_get_layout(fs, path, &got) == 0)
        printf("mpi_shared_file: %s, %d stripes of %u bytes, size %llu\n", path,
               got.stripe_count, got.stripe_size, (unsigned long long)st.size);
    rc = nacre_close(f);
    if (rc < 0) fail(rank, "close", rc);
    nacre_disconnect(fs);
    free(buf);
    if (rank == 0)
        printf("mpi_shared_file: %d ranks, %zu-byte blocks: %s\n", size, block,
               all ? "MISMATCH" : "OK");
    MPI_Finalize();
    return all ? 1 : 0;
}
