/* replay.c — without libFuzzer, runs every file of the given corpus
 * directories through LLVMFuzzerTestOneInput once: the corpus (and every
 * crash found, added to it) becomes a regression test under CTest. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
	int n = 0;

	for (int i = 1; i < argc; i++) {
		DIR *d = opendir(argv[i]);
		struct dirent *de;
		if (!d) {
			perror(argv[i]);
			return 1;
		}
		while ((de = readdir(d))) {
			char path[4096];
			FILE *f;
			long len;
			uint8_t *buf;
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", argv[i],
				 de->d_name);
			f = fopen(path, "rb");
			if (!f)
				continue;
			fseek(f, 0, SEEK_END);
			len = ftell(f);
			rewind(f);
			buf = malloc(len ? (size_t)len : 1);
			if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
				fclose(f);
				free(buf);
				continue;
			}
			fclose(f);
			LLVMFuzzerTestOneInput(buf, (size_t)len);
			free(buf);
			n++;
		}
		closedir(d);
	}
	printf("replayed %d inputs: no crash\n", n);
	return n ? 0 : 1;
}
