/*
 * NVMe admin passthrough for the two commands nvme_ebs needs, and decoders
 * for their answers. Only these two fixed commands can be built here: there
 * is deliberately no generic passthrough entry point.
 */
#include "nvme_ebs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/nvme_ioctl.h>
#include <malloc.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATS_LOG_ID 0xD0
#define STATS_NSID 1
#define IDENTIFY_CNS_CONTROLLER 1
/* NUMD is zero-based: a 4096-byte page is 1024 dwords, sent as 1023. */
#define STATS_CDW10 (((uint32_t)(NVME_EBS_PAGE_SIZE / 4 - 1) << 16) | STATS_LOG_ID)

#define OFF_COUNTERS 8
#define OFF_READ_HIST 512
#define OFF_WRITE_HIST 2056
#define HIST_BIN_SIZE 24
#define IDENT_OFF_SERIAL 4
#define IDENT_OFF_MODEL 24
#define IDENT_OFF_FIRMWARE 64
#define IDENT_OFF_BDEV_MAPPING 3072

/* 0: the kernel's default admin timeout (60 s with nvme_core's defaults). */
static uint32_t command_timeout_ms;

void nvme_ebs_set_timeout_ms(uint32_t timeout_ms)
{
    command_timeout_ms = timeout_ms;
}

static struct nvme_ebs_result result(int kind, int code)
{
    struct nvme_ebs_result r;

    r.kind = kind;
    r.code = code;
    return r;
}

static struct nvme_ebs_result admin_command(const char *path, uint8_t opcode, uint32_t nsid, uint32_t cdw10,
                                            uint8_t *page)
{
    struct nvme_passthru_cmd cmd;
    struct stat st;
    int fd, rc, saved;

    /* O_NONBLOCK: opening a FIFO planted where a device was expected must not hang. */
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return result(NVME_EBS_RESULT_ERRNO, errno);
    /* Only device nodes get an ioctl: a regular file or FIFO is "not NVMe". */
    if (fstat(fd, &st) < 0 || !(S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))) {
        close(fd);
        return result(NVME_EBS_RESULT_ERRNO, ENOTTY);
    }

    memset(&cmd, 0, sizeof(cmd));
    cmd.opcode = opcode;
    cmd.nsid = nsid;
    cmd.addr = (uint64_t)(uintptr_t)page;
    cmd.data_len = NVME_EBS_PAGE_SIZE;
    cmd.cdw10 = cdw10;
    cmd.timeout_ms = command_timeout_ms;

    memset(page, 0, NVME_EBS_PAGE_SIZE);
    do {
        rc = ioctl(fd, NVME_IOCTL_ADMIN_CMD, &cmd);
    } while (rc < 0 && errno == EINTR);
    saved = errno;
    close(fd);
    if (rc < 0)
        return result(NVME_EBS_RESULT_ERRNO, saved);
    /* The kernel returns the completion's status field, status code type and all. */
    return rc == 0 ? result(NVME_EBS_RESULT_OK, 0) : result(NVME_EBS_RESULT_NVME_STATUS, rc);
}

struct nvme_ebs_result nvme_ebs_identify(const char *path, uint8_t *page)
{
    return admin_command(path, NVME_EBS_OPC_IDENTIFY, 0, IDENTIFY_CNS_CONTROLLER, page);
}

struct nvme_ebs_result nvme_ebs_get_stats_page(const char *path, uint8_t *page)
{
    return admin_command(path, NVME_EBS_OPC_GET_LOG_PAGE, STATS_NSID, STATS_CDW10, page);
}

/* Little-endian loads that do not depend on the host's byte order or alignment. */
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* The last bin may be open-ended: an upper bound of 0 or all ones means "no bound". */
static int is_open_upper(uint64_t upper)
{
    return upper == 0 || upper == UINT64_MAX;
}

static int decode_histogram(const uint8_t *p, struct nvme_ebs_histogram *h, int *error_bin)
{
    uint64_t i, n = le64(p);
    const uint8_t *bin = p + 8;

    h->num_bins = n;
    if (n > NVME_EBS_MAX_BINS)
        return NVME_EBS_ERR_NUM_BINS;
    for (i = 0; i < n; i++, bin += HIST_BIN_SIZE) {
        h->lower_us[i] = le64(bin);
        h->upper_us[i] = le64(bin + 8);
        h->count[i] = le32(bin + 16);
        *error_bin = (int)i;
        if (h->lower_us[i] >= h->upper_us[i] && !(i == n - 1 && is_open_upper(h->upper_us[i])))
            return NVME_EBS_ERR_BIN_RANGE;
        if (i > 0 && h->lower_us[i] < h->upper_us[i - 1])
            return NVME_EBS_ERR_BIN_ORDER;
    }
    *error_bin = -1;
    return NVME_EBS_OK;
}

int nvme_ebs_decode_stats(const uint8_t *page, size_t len, struct nvme_ebs_stats *out)
{
    const uint8_t *c;
    int rc;

    out->error_histogram = -1;
    out->error_bin = -1;
    if (len < NVME_EBS_PAGE_SIZE)
        return NVME_EBS_ERR_SHORT;
    out->magic = le32(page);
    out->version = le32(page + 4);
    if (out->magic == NVME_EBS_MAGIC_EBS)
        out->kind = NVME_EBS_KIND_EBS;
    else if (out->magic == NVME_EBS_MAGIC_INSTANCE_STORE)
        out->kind = NVME_EBS_KIND_INSTANCE_STORE;
    else
        return NVME_EBS_ERR_MAGIC;

    c = page + OFF_COUNTERS; /* only once the length is known: no pointer past a short buffer */
    out->total_read_ops = le64(c);
    out->total_write_ops = le64(c + 8);
    out->total_read_bytes = le64(c + 16);
    out->total_write_bytes = le64(c + 24);
    out->total_read_time_us = le64(c + 32);
    out->total_write_time_us = le64(c + 40);
    out->ebs_volume_performance_exceeded_iops_us = le64(c + 48);
    out->ebs_volume_performance_exceeded_tp_us = le64(c + 56);
    out->ec2_instance_ebs_performance_exceeded_iops_us = le64(c + 64);
    out->ec2_instance_ebs_performance_exceeded_tp_us = le64(c + 72);
    out->volume_queue_length = le64(c + 80);

    out->error_histogram = 0;
    rc = decode_histogram(page + OFF_READ_HIST, &out->read_hist, &out->error_bin);
    if (rc != NVME_EBS_OK)
        return rc;
    out->error_histogram = 1;
    rc = decode_histogram(page + OFF_WRITE_HIST, &out->write_hist, &out->error_bin);
    if (rc != NVME_EBS_OK)
        return rc;
    out->error_histogram = -1;
    return NVME_EBS_OK;
}

/* Copies a fixed-width ASCII field, dropping trailing spaces and NULs. */
static void copy_trimmed(char *dst, const uint8_t *src, size_t width)
{
    size_t n = width;

    while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\0'))
        n--;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

int nvme_ebs_decode_identity(const uint8_t *page, size_t len, struct nvme_ebs_identity *out)
{
    if (len < NVME_EBS_PAGE_SIZE)
        return NVME_EBS_ERR_SHORT;
    out->vid = (uint16_t)(page[0] | page[1] << 8);
    out->ssvid = (uint16_t)(page[2] | page[3] << 8);
    copy_trimmed(out->serial, page + IDENT_OFF_SERIAL, sizeof(out->serial) - 1);
    copy_trimmed(out->model, page + IDENT_OFF_MODEL, sizeof(out->model) - 1);
    copy_trimmed(out->firmware, page + IDENT_OFF_FIRMWARE, sizeof(out->firmware) - 1);
    copy_trimmed(out->bdev_mapping, page + IDENT_OFF_BDEV_MAPPING, sizeof(out->bdev_mapping) - 1);
    return NVME_EBS_OK;
}

struct nvme_ebs_result nvme_ebs_read_stats(const char *path, uint8_t *page, struct nvme_ebs_stats *out)
{
    struct nvme_ebs_result r = nvme_ebs_get_stats_page(path, page);
    int rc;

    if (r.kind != NVME_EBS_RESULT_OK)
        return r;
    rc = nvme_ebs_decode_stats(page, NVME_EBS_PAGE_SIZE, out);
    return rc == NVME_EBS_OK ? r : result(NVME_EBS_RESULT_DECODE, rc);
}

int nvme_ebs_tune_malloc(int arena_max, int mmap_threshold)
{
    return mallopt(M_ARENA_MAX, arena_max) == 1 && mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1;
}
