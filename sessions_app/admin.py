from django.contrib import admin
from django.http import HttpRequest
from django.utils.text import Truncator

from sessions_app.models import ChatMessage, ChatSession

PREVIEW_CHARS = 80


def _preview(message: ChatMessage) -> str:
    return Truncator(message.content).chars(PREVIEW_CHARS)


class ChatMessageInline(admin.TabularInline):
    """The conversation as it happened: staff can read it, not rewrite it."""

    model = ChatMessage
    fields = ("message_type", "content_preview", "status", "disabled", "tokens_count", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    @admin.display(description="content")
    def content_preview(self, message: ChatMessage) -> str:
        return _preview(message)

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = ("title", "user", "chatbot", "ai_model", "updated_at")
    list_select_related = ("user", "chatbot", "ai_model")
    list_filter = ("is_active", "chatbot", "ai_model")
    search_fields = ("title", "user__email")
    raw_id_fields = ("user",)
    readonly_fields = ("created_at", "updated_at")
    inlines = [ChatMessageInline]


@admin.register(ChatMessage)
class ChatMessageAdmin(admin.ModelAdmin):
    list_display = ("message_type", "session", "content_preview", "status", "disabled", "created_at")
    list_select_related = ("session",)
    list_filter = ("message_type", "status", "disabled")
    raw_id_fields = ("session", "ai_model")
    # Messages are the largest table: skip the unfiltered COUNT(*) on every page.
    show_full_result_count = False

    @admin.display(description="content")
    def content_preview(self, message: ChatMessage) -> str:
        return _preview(message)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
