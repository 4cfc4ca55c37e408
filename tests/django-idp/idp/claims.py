"""Claims DOT puts into ID tokens and userinfo: the standard profile/email
claims and `roles` (the user's Django group names) under the `roles` scope."""

from oauth2_provider.oauth2_validators import OAuth2Validator


class RolesValidator(OAuth2Validator):
    # A claim is released only when its scope was granted.
    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "roles": "roles"}

    def get_additional_claims(self, request):
        user = request.user
        return {
            "preferred_username": user.username,
            "name": user.username.capitalize(),
            "email": user.email,
            "email_verified": True,
            "roles": sorted(user.groups.values_list("name", flat=True)),
        }
