from django.contrib import admin, messages

from apikeys import services
from apikeys.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "revoked_at", "store_chats"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "store_chats"]
    list_select_related = ["user"]
    search_fields = ["prefix", "name", "user__email"]
    readonly_fields = ["user", "prefix", "created_at", "last_used_at", "revoked_at"]
    fields = ["user", "name", "prefix", "store_chats", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # a key is made by its owner, who alone sees it once

    def has_delete_permission(self, request, obj=None):
        return False  # revoked, never deleted: the ledger keeps pointing at it

    @admin.action(description="Revoke the selected keys (at once, on every app server)")
    def revoke(self, request, queryset):
        revoked = services.api_keys_revoke(keys=queryset)
        self.message_user(request, f"Revoked {revoked} key{'s' if revoked != 1 else ''}.", messages.SUCCESS)
