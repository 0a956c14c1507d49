/* formats.h: the names of the tool's file formats, as the root attribute `format` holds
 * them, and their versions (`format_version`); docs/formats.md describes each layout. */
#ifndef GPT_FORMATS_H
#define GPT_FORMATS_H

#define MODEL_FORMAT "gpt-model"
#define MODEL_FORMAT_VERSION 1
#define CKPT_FORMAT "gpt-checkpoint"
#define CKPT_FORMAT_VERSION 1
#define CORPUS_FORMAT "gpt-corpus"
#define CORPUS_FORMAT_VERSION 1
#define TOKENIZER_FORMAT "gpt-tokenizer"
#define TOKENIZER_FORMAT_VERSION 1
#define TASK_FORMAT "gpt-task"
#define TASK_FORMAT_VERSION 1
#define TASK_MODEL_FORMAT "gpt-task-model"

#endif
