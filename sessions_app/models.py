import uuid

from django.conf import settings
from django.db import models

from chatbots.models import AIModel, Chatbot

DEFAULT_TITLE = "New Chat"


class ChatSession(models.Model):
    # Indexed by the composite indexes below, which lead with the user.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_sessions", db_index=False
    )
    chatbot = models.ForeignKey(Chatbot, on_delete=models.PROTECT, related_name="sessions")
    ai_model = models.ForeignKey(AIModel, on_delete=models.PROTECT, related_name="sessions")
    title = models.CharField(max_length=200, default=DEFAULT_TITLE)
    auto_generate_title = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    is_active = models.BooleanField(default=True)
    # Kept at the top of the chat list.
    pinned = models.BooleanField(default=False)

    class Meta:
        # Newest activity first: the order of the chat list.
        ordering = ["-updated_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-updated_at", "-id"], name="session_user_recent_idx"),
            models.Index(fields=["user", "created_at"], name="session_user_created_idx"),
        ]

    def __str__(self) -> str:
        return self.title


class ChatMessage(models.Model):
    class Type(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        GENERATING = "generating", "Generating"
        COMPLETE = "complete", "Complete"
        PARTIAL = "partial", "Partial"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    message_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages", db_index=False)
    message_type = models.CharField(max_length=10, choices=Type.choices)
    content = models.TextField(blank=True)
    tokens_count = models.PositiveIntegerField(default=0)
    image_url = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Last write; a reply still "generating" long after it has been abandoned by a dead process.
    updated_at = models.DateTimeField(auto_now=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    disabled = models.BooleanField(default=False)
    ai_model = models.ForeignKey(AIModel, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.COMPLETE)
    # The user message an assistant message answers.
    reply_to = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="replies")
    # The message this one follows (None for the first): edits and regenerations are siblings under one
    # parent, the versions a page switches between (1/2). A public id, not a foreign key, so a message serializes alone.
    parent_message_id = models.UUIDField(null=True, blank=True)
    # Why a reply failed or was cut short, as the API's error code and text.
    error_code = models.CharField(max_length=32, blank=True)
    error_detail = models.CharField(max_length=300, blank=True)
    # Idempotency: a retried send with the same key returns the first result.
    client_message_id = models.UUIDField(null=True, blank=True)
    request_hash = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["session", "created_at", "id"], name="message_session_order_idx"),
            # Replies in flight: the per-user cap counts them, reaping looks for the abandoned ones.
            models.Index(fields=["session"], name="message_generating_idx", condition=models.Q(status="generating")),
            models.Index(fields=["session", "parent_message_id"], name="message_parent_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "client_message_id"],
                condition=models.Q(client_message_id__isnull=False),
                name="message_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_type} {self.message_id}"


class ReplyPiece(models.Model):
    """Text of a reply still generating, appended as it arrives; folded into `content` at its end.

    Appending pieces instead of rewriting the whole text keeps the bytes written for a reply
    a small multiple of its final size, however long it grows.
    """

    message = models.ForeignKey(ChatMessage, on_delete=models.CASCADE, related_name="pieces", db_index=False)
    offset = models.PositiveIntegerField()  # where the piece starts in the reply's text, in characters
    text = models.TextField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "offset"], name="reply_piece_order")]

    def __str__(self) -> str:
        return f"piece at {self.offset}"
