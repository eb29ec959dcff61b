/** Why node-llama-cpp's prebuilt binary cannot load here, or null when it can (tests skip with the reason). */
export async function llamaCppUnavailable(): Promise<string | null> {
  try {
    const { getLlama } = await import('node-llama-cpp');
    await getLlama({ gpu: false, build: 'never', progressLogs: false, logLevel: 'error' as never });
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}
