// The widget's words, in English and French (`data-lang`).

const en = {
  title: "Chat",
  open: "Open the chat",
  close: "Close the chat",
  newChat: "New conversation",
  log: "Conversation",
  empty: "Ask a question to start.",
  label: "Your message",
  placeholder: "Write a message…",
  send: "Send",
  stop: "Stop the answer",
  you: "You",
  bot: "Assistant",
  connecting: "Connecting…",
  reconnecting: "Connection lost. Reconnecting…",
  reconnectingIn: "Connection lost. Reconnecting in {s} s…",
  signIn: "Could not sign in to the chat. Retrying…",
  offline: "The chat is not available right now.",
  stopped: "Stopped",
  cut: "Answer cut at its maximum length",
  notSent: "Not sent",
  interrupted: "This answer was interrupted.",
  rateLimited: "You are sending messages quickly. You can send again in {s} s.",
  canSend: "You can send again.",
  quota: "The usage limit for this month has been reached. Please come back later.",
  tooLong: "Your message is too long ({n} characters at most).",
  busy: "Please wait for the current answer to finish.",
  upstream: "The assistant could not answer. Please try again.",
  unavailable: "The service is briefly unavailable. Please try again in a moment.",
  notFound: "This conversation is no longer available. A new one will start.",
  generic: "Something went wrong. Please try again.",
  elsewhere: "An answer is being written in another conversation (another tab or device).",
  left: "{n} characters left",
  answered: "Assistant: {text}",
  thinking: "Thinking…",
  thought: "Reasoning",
  feedback: "Rate this answer",
  good: "Good answer",
  bad: "Bad answer",
  whatWasWrong: "What was wrong? (optional)",
  sendFeedback: "Send",
  thanks: "Thank you for your feedback.",
  feedbackFailed: "Your feedback could not be sent. Please try again.",
};

export type Strings = typeof en;

const fr: Strings = {
  title: "Discussion",
  open: "Ouvrir la discussion",
  close: "Fermer la discussion",
  newChat: "Nouvelle conversation",
  log: "Conversation",
  empty: "Posez une question pour commencer.",
  label: "Votre message",
  placeholder: "Écrivez un message…",
  send: "Envoyer",
  stop: "Arrêter la réponse",
  you: "Vous",
  bot: "Assistant",
  connecting: "Connexion…",
  reconnecting: "Connexion perdue. Reconnexion…",
  reconnectingIn: "Connexion perdue. Reconnexion dans {s} s…",
  signIn: "Connexion à la discussion impossible. Nouvel essai…",
  offline: "La discussion n'est pas disponible pour le moment.",
  stopped: "Arrêtée",
  cut: "Réponse coupée à sa longueur maximale",
  notSent: "Non envoyé",
  interrupted: "Cette réponse a été interrompue.",
  rateLimited: "Vous envoyez des messages rapidement. Vous pourrez écrire de nouveau dans {s} s.",
  canSend: "Vous pouvez de nouveau écrire.",
  quota: "La limite d'utilisation de ce mois est atteinte. Revenez plus tard.",
  tooLong: "Votre message est trop long ({n} caractères au plus).",
  busy: "Attendez la fin de la réponse en cours.",
  upstream: "L'assistant n'a pas pu répondre. Réessayez.",
  unavailable: "Le service est brièvement indisponible. Réessayez dans un instant.",
  notFound: "Cette conversation n'est plus disponible. Une nouvelle va commencer.",
  generic: "Un problème est survenu. Réessayez.",
  elsewhere: "Une réponse est en cours dans une autre conversation (autre onglet ou appareil).",
  left: "{n} caractères restants",
  answered: "Assistant : {text}",
  thinking: "Réflexion…",
  thought: "Raisonnement",
  feedback: "Évaluer cette réponse",
  good: "Bonne réponse",
  bad: "Mauvaise réponse",
  whatWasWrong: "Qu'est-ce qui n'allait pas ? (facultatif)",
  sendFeedback: "Envoyer",
  thanks: "Merci pour votre avis.",
  feedbackFailed: "Votre avis n'a pas pu être envoyé. Réessayez.",
};

/** The strings for `lang` (a BCP 47 tag); French for `fr*`, English otherwise. */
export function strings(lang: string | null | undefined): { lang: "en" | "fr"; t: Strings } {
  const fr_ = /^fr\b/i.test(lang ?? "");
  return { lang: fr_ ? "fr" : "en", t: fr_ ? fr : en };
}

/** Fills `{name}` placeholders. */
export function fill(template: string, values: Record<string, string | number>): string {
  return template.replace(/\{(\w+)\}/g, (_, key: string) => String(values[key] ?? ""));
}
