// The new-alert tone, generated with WebAudio (no audio file to fetch), and a vibration
// where the phone supports it. Browsers start audio only after a tap: the first tap on
// the page (the sign-in button, usually) unlocks it.

let context: AudioContext | null = null;

export function unlockAudio(): void {
  if (context === null) {
    try {
      context = new AudioContext();
    } catch {
      return; // no WebAudio: vibration and the screen still tell
    }
  }
  if (context.state === "suspended") {
    void context.resume();
  }
}

export function audioReady(): boolean {
  return context !== null && context.state === "running";
}

/** Three rising two-note chimes, about 1.2 s in all. */
export function playAlertTone(): void {
  if ("vibrate" in navigator) {
    navigator.vibrate([300, 120, 300, 120, 300]);
  }
  if (context === null || context.state !== "running") {
    return;
  }
  const start = context.currentTime + 0.02;
  for (let repeat = 0; repeat < 3; repeat += 1) {
    for (const [offset, frequency] of [
      [0, 660],
      [0.18, 880],
    ] as const) {
      const at = start + repeat * 0.4 + offset;
      const oscillator = context.createOscillator();
      const gain = context.createGain();
      oscillator.type = "sine";
      oscillator.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, at);
      gain.gain.exponentialRampToValueAtTime(0.4, at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.17);
      oscillator.connect(gain).connect(context.destination);
      oscillator.start(at);
      oscillator.stop(at + 0.18);
    }
  }
}
