/* version.h: the tool's version, written into every file it produces. */
#ifndef GPT_VERSION_H
#define GPT_VERSION_H
#define GPT_VERSION "0.1.0"
#endif
