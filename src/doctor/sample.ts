/**
 * The built-in synthetic conversations the doctor probes templates with and
 * simulates collators over when no `--data` is given. Short and plain so
 * every template renders them; one has a system turn, one does not (some
 * templates reject system messages).
 */
import type { Conversation } from '../data/conversations.js';

export const SAMPLE: Conversation[] = [
  {
    messages: [
      { role: 'system', content: 'You are a concise assistant.' },
      { role: 'user', content: 'What is 2 + 2?' },
      { role: 'assistant', content: '2 + 2 = 4.' },
      { role: 'user', content: 'And 3 + 3?' },
      { role: 'assistant', content: '3 + 3 = 6.' },
    ],
  },
  {
    messages: [
      { role: 'user', content: 'Name a colour.' },
      { role: 'assistant', content: 'Blue.' },
    ],
  },
  {
    messages: [
      { role: 'user', content: 'Say hello in French.' },
      { role: 'assistant', content: 'Bonjour !' },
      { role: 'user', content: 'Thanks.' },
      { role: 'assistant', content: "You're welcome." },
    ],
  },
  {
    messages: [
      { role: 'user', content: 'Write one word that rhymes with cat.' },
      { role: 'assistant', content: 'Hat.' },
    ],
  },
];
