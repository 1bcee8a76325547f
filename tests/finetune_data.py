"""Self-made labelled texts for the fine-tuning tests: four intents, six phrasings each."""

from __future__ import annotations

TOPICS: dict[str, list[str]] = {
    "card": [
        "My card payment was declined at the shop",
        "Why was my card declined?",
        "The card does not work in the terminal",
        "Card refused when I tried to pay",
        "My debit card keeps getting rejected",
        "Payment with my card failed",
    ],
    "transfer": [
        "How long does a bank transfer take?",
        "My transfer has not arrived yet",
        "When will the money I sent arrive?",
        "The transfer to my friend is still pending",
        "I sent money but it is not there",
        "Transfer taking too long",
    ],
    "pin": [
        "I forgot my PIN",
        "How can I reset my PIN code?",
        "Where do I change my PIN?",
        "My PIN is blocked after wrong attempts",
        "I need a new PIN number",
        "Unblock my PIN please",
    ],
    "address": [
        "How do I change my address?",
        "I moved and need to update my home address",
        "Update the address on my account",
        "Where can I edit my postal address?",
        "My address is wrong in the app",
        "Change of address request",
    ],
}
