// DirtyTarget PAGES [mixed]: the process the tracker and checkpoint benchmarks freeze,
// collect and checkpoint.
//
// Maps PAGES anonymous private 4 KiB pages (MADV_NOHUGEPAGE, so that a write dirties one
// 4 KiB page and not a 2 MiB one), writes every page (non-zero, distinct: page number and a
// SplitMix64 value), prints "ready ADDRESS PAGES" (hex address) and then serves commands
// from stdin, one a line, answering on stdout (line-buffered).
//
// With `mixed`, memory looks more like a real heap, a third each of:
//   p % 3 == 0   never touched: zero, not resident
//   p % 3 == 1   text: the page number (8 bytes), then lines of words from a fixed
//                vocabulary, skewed towards common words (LZ4 shrinks it about 1.9x)
//   p % 3 == 2   random: the page number, then SplitMix64 words (LZ4 cannot shrink it)
// Everything comes from one fixed seed, so two targets started with the same arguments hold
// the same bytes (at different addresses), and every resident page is distinct.
//
// Commands:
//   d K   writes K distinct pages chosen at random (one 8-byte store each, a value the page
//         never held before, so a hashing tracker sees the change too; with `mixed`, a zero
//         page so written becomes resident, and all such pages of one command hold the same
//         bytes); answers "ok"
//   q     exits (as does end of file, or the death of the parent)
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

static uint64_t state = 0x243F6A8885A308D3ull;

static uint64_t splitmix64(void) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The text pages' vocabulary: 512 words of 2 to 9 letters, drawn with a skew towards the
// common letters, so that words share fragments as natural language does.
enum { VOCABULARY = 512 };
static char vocabulary[VOCABULARY][10];
static uint8_t vocabularyLength[VOCABULARY];

static void makeVocabulary(void) {
    static const char letters[] = "etaoinshrdlcumwfgypbvkjxqz";
    for (int w = 0; w < VOCABULARY; w++) {
        int length = 2 + (int)(splitmix64() % 8);
        for (int k = 0; k < length; k++) {
            uint64_t r = splitmix64();
            // The smaller of two draws: early (common) letters come up more often.
            uint64_t a = r % 26, b = (r >> 32) % 26;
            vocabulary[w][k] = letters[a < b ? a : b];
        }
        vocabularyLength[w] = (uint8_t)length;
    }
}

// Fills `page` after its first 8 bytes with lines of about ten words.
static void writeText(uint8_t *page) {
    size_t at = 8, inLine = 0;
    while (at < 4096) {
        uint64_t r = splitmix64();
        // Skewed: the smaller of two indices, so a few hundred words make most of the text.
        uint64_t a = r % VOCABULARY, b = (r >> 32) % VOCABULARY;
        uint64_t w = a < b ? a : b;
        for (int k = 0; k < vocabularyLength[w] && at < 4096; k++) page[at++] = (uint8_t)vocabulary[w][k];
        if (at < 4096) page[at++] = ++inLine % 10 == 0 ? '\n' : ' ';
    }
}

int main(int argc, char **argv) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "mixed") != 0)) {
        fprintf(stderr, "usage: DirtyTarget PAGES [mixed]\n");
        return 2;
    }
    int mixed = argc == 3;
    // Only stdin, stdout and stderr are ours: close whatever else the benchmark process left
    // open across exec (its harness's pipes and sockets), which a checkpoint would refuse.
    close_range(3, ~0u, 0);
    size_t pages = strtoull(argv[1], NULL, 10);
    size_t size = pages * 4096;
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    madvise(base, size, MADV_NOHUGEPAGE);
    if (mixed) {
        makeVocabulary();
        for (size_t p = 0; p < pages; p++) {
            uint64_t *words = (uint64_t *)(base + p * 4096);
            if (p % 3 == 0) continue;
            words[0] = p + 1;
            if (p % 3 == 1) {
                writeText(base + p * 4096);
            } else {
                for (int k = 1; k < 512; k++) words[k] = splitmix64();
            }
        }
    } else {
        for (size_t p = 0; p < pages; p++) {
            uint64_t *words = (uint64_t *)(base + p * 4096);
            words[0] = p + 1;
            for (int k = 1; k < 512; k += 8) words[k] = splitmix64() | 1;
        }
    }
    // Pages written by the current command, so that each is chosen once: a bitmap (8 pages
    // for 1 GiB), cleared whole per command, so that it adds the same few dirty pages each time.
    size_t words = (pages + 63) / 64;
    uint64_t *chosen = malloc(words * sizeof(uint64_t));
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %lx %zu\n", (unsigned long)(uintptr_t)base, pages);

    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        if (line[0] == 'q') break;
        if (line[0] != 'd') {
            printf("error unknown command\n");
            continue;
        }
        size_t count = strtoull(line + 1, NULL, 10);
        if (count > pages) count = pages;
        memset(chosen, 0, words * sizeof(uint64_t));
        for (size_t n = 0; n < count;) {
            size_t p = splitmix64() % pages;
            if (chosen[p / 64] & (1ull << (p % 64))) continue;
            chosen[p / 64] |= 1ull << (p % 64);
            uint64_t *words = (uint64_t *)(base + p * 4096);
            words[0] += pages;  // never a value it held before
            n++;
        }
        printf("ok\n");
    }
    return 0;
}
