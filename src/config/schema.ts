/**
 * The one config schema (SPEC §6) shared by YAML files and CLI flags. Each
 * field is documented once, here; `flagTable()` derives the flags
 * (`max_length` ↔ `--max-length`, `lora.r` ↔ `--lora-r`).
 */
import { z } from 'zod';

const positiveInt = z.number().int().positive();

export const LoraSchema = z
  .object({
    r: positiveInt.default(8).describe('LoRA rank'),
    alpha: z.number().positive().default(16).describe('LoRA alpha (scale = alpha / r)'),
    dropout: z.number().min(0).max(1).default(0).describe('dropout on the LoRA input'),
    targets: z
      .array(z.enum(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']))
      .default(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'])
      .describe('projections that get adapters'),
    train_embeddings: z
      .enum(['new_tokens', 'none', 'all'])
      .default('new_tokens')
      .describe('embedding rows trained with LoRA: tokens added for the template (default), none, or all'),
  })
  .strict();

export const ConfigSchema = z
  .object({
    model: z.string().optional().describe('Hugging Face model folder (tokenizer + optional weights)'),
    model_config: z.string().optional().describe('config.json to start from random weights when the model folder has none'),
    data: z
      .object({
        train: z.string().optional().describe('training conversations (JSONL) or a prepared folder'),
        eval: z.string().optional().describe('held-out conversations (JSONL) or a prepared folder'),
      })
      .strict()
      .default({}),
    template: z.string().default('model').describe("chat template: 'model', 'chatml', a named template, or a .jinja file"),
    template_vars: z.record(z.string(), z.unknown()).default({}).describe('extra template variables (e.g. enable_thinking)'),
    train_on: z.enum(['assistant', 'last', 'all']).default('assistant').describe('which turns carry loss'),
    max_length: positiveInt.optional().describe('longest example (or packed row) in tokens'),
    truncation: z.enum(['drop', 'truncate_turns']).default('drop').describe('over-length policy'),
    packing: z.boolean().default(false).describe('pack examples into rows of max_length'),
    pad: z.string().default('auto').describe('pad token: auto, eos, unk, or a token string'),
    padding_side: z.enum(['right', 'left']).default('right').describe('side the collator pads on'),
    allow_special_tokens_in_content: z.boolean().default(false).describe('keep conversations whose text contains special-token strings'),
    lora: LoraSchema.optional().describe('LoRA settings; full fine-tuning when absent'),
    lr: z.number().positive().default(2e-4).describe('peak learning rate'),
    weight_decay: z.number().min(0).default(0).describe('AdamW decoupled weight decay (not on norms and biases)'),
    warmup_steps: z.number().int().min(0).default(0).describe('linear warmup steps'),
    schedule: z.enum(['cosine', 'constant']).default('cosine').describe('learning-rate schedule after warmup'),
    max_grad_norm: z.number().positive().default(1).describe('global gradient-norm clip'),
    batch_size: positiveInt.default(8).describe('rows per micro-batch'),
    grad_accum: positiveInt.default(1).describe('micro-batches per optimiser step'),
    epochs: z.number().positive().optional().describe('passes over the training rows'),
    max_steps: positiveInt.optional().describe('optimiser steps (overrides epochs)'),
    seed: z.number().int().default(0).describe('seed for init, data order and dropout'),
    eval: z
      .object({
        every_steps: z.number().int().min(0).default(0).describe('eval loss and stop rate every N steps (0: only at the end)'),
        max_new_tokens: positiveInt.default(128).describe('generation budget for stop-rate evaluation'),
        samples: z
          .number()
          .int()
          .min(0)
          .default(32)
          .describe('held-out prompts generated from at each evaluation (data.eval, else a slice held out of data.train); 0: no stop rate'),
      })
      .strict()
      .default({ every_steps: 0, max_new_tokens: 128, samples: 32 }),
    checkpoint_every: z.number().int().min(0).default(0).describe('checkpoint every N steps (0: only at the end)'),
    allow_no_eot: z.boolean().default(false).describe('train even when the data supervise no EOT'),
    allow_extra_tensors: z
      .boolean()
      .default(false)
      .describe('load weights that carry tensors the config does not use (ignored) instead of refusing them'),
    output_dir: z.string().optional().describe('where the trained model folder goes'),
  })
  .strict();

export type SftConfig = z.infer<typeof ConfigSchema>;
export type LoraConfig = z.infer<typeof LoraSchema>;
