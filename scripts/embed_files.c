// embed_files.c — the build's generator for files built into the binary
// (the page `ramole serve` gives at /): `embed_files FILE... > web.c` writes
// a C source holding each file's bytes and the table rm_web_files of
// serve/web.h, named by the file's name without its folder.
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    printf("// Written by scripts/embed_files.c at build time from the files below; do not edit.\n");
    printf("#include \"serve/web.h\"\n\n");
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            fprintf(stderr, "embed_files: cannot open %s\n", argv[i]);
            return 1;
        }
        printf("// %s\nstatic const unsigned char file%d[] = {", argv[i], i);
        int c;
        for (long n = 0; (c = getc(f)) != EOF; n++) printf("%s%d,", n % 24 ? "" : "\n    ", c);
        int bad = ferror(f);
        fclose(f);
        if (bad) {
            fprintf(stderr, "embed_files: cannot read %s\n", argv[i]);
            return 1;
        }
        printf("\n    0};\n\n"); // a NUL after the bytes, not counted in the length
    }
    printf("const rm_web_file rm_web_files[] = {\n");
    for (int i = 1; i < argc; i++) {
        const char *slash = strrchr(argv[i], '/'), *name = slash ? slash + 1 : argv[i];
        printf("    {\"%s\", file%d, sizeof file%d - 1},\n", name, i, i);
    }
    printf("    {0, 0, 0},\n};\n");
    return ferror(stdout) ? 1 : 0;
}
